// Live updates: one EventSource on /v1/events for the whole page, and repaints coalesced
// so that no burst of events repaints more than four times a second.

export const MIN_REPAINT_MS = 250;

// Counted for the bench and the tests: repaints made (and the ms spent in them), events
// received (and when the last one came, in performance.now() ms).
window.consoleStats = { repaints: 0, paintMs: 0, events: 0, lastEvent: 0 };

export class Coalescer {
  constructor(paint, interval = MIN_REPAINT_MS) {
    this.paint = paint;
    this.interval = interval;
    this.last = -Infinity;
    this.timer = null;
  }

  // Repaint soon: at once if the last repaint is old enough, else when it is.
  request() {
    if (this.timer !== null) {
      return;
    }
    const wait = Math.max(0, this.last + this.interval - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.last = performance.now();
      window.consoleStats.repaints += 1;
      this.paint();
      window.consoleStats.paintMs += performance.now() - this.last;
    }, wait);
  }

  cancel() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }
}

export class EventHub {
  constructor(status, lost = () => {}) {
    this.status = status; // (text) => void
    this.lost = lost; // the stream broke: maybe the session ended
    this.listeners = new Set();
    this.source = null;
  }

  // `listener(event)` gets every transition; `listener(null)` after a gap (lost events:
  // refetch everything).
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  open() {
    if (this.source !== null) {
      return;
    }
    const source = new EventSource("/v1/events");
    this.source = source;
    source.addEventListener("open", () => this.status("live"));
    source.addEventListener("error", () => {
      this.status("reconnecting…");
      this.lost();
    });
    source.addEventListener("transition", (message) => {
      window.consoleStats.events += 1;
      window.consoleStats.lastEvent = performance.now();
      const event = JSON.parse(message.data);
      for (const listener of this.listeners) {
        listener(event);
      }
    });
    source.addEventListener("gap", () => {
      for (const listener of this.listeners) {
        listener(null);
      }
    });
  }

  close() {
    if (this.source !== null) {
      this.source.close();
      this.source = null;
    }
    this.status("");
  }
}
