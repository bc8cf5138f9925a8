// Put into a page by sse-chaos: opens the browser's own EventSources and records what
// each one sees, with wall-clock times in milliseconds, for the test to drain.
(() => {
  if (window.__sse) return;
  const log = [];
  const sources = {};
  const now = () => performance.timeOrigin + performance.now();
  window.__sse = {
    // `types`: event types to listen for with addEventListener (besides `message`).
    open(name, url, options, types) {
      const source = new EventSource(url, options || {});
      sources[name] = source;
      const push = (kind, e) => log.push({
        source: name,
        kind,
        at: now(),
        type: e.type,
        id: typeof e.lastEventId === "string" ? e.lastEventId : "",
        data: typeof e.data === "string" ? e.data : null,
        state: source.readyState,
      });
      source.onopen = (e) => push("open", e);
      source.onerror = (e) => push("error", e);
      source.onmessage = (e) => push("event", e);
      for (const type of types || []) source.addEventListener(type, (e) => push("event", e));
    },
    close(name) {
      if (sources[name]) sources[name].close();
      delete sources[name];
    },
    drain() {
      return log.splice(0);
    },
  };
})();
