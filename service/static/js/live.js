// Live updates of a study: its server-sent event stream when the service has one, else polling.

import { hasRoute } from "./api.js";

export const EVENTS_PATH = "/api/studies/{study_id}/events";
// Event types the service emits (service/events/); each is a named SSE event, which
// EventSource only delivers to a listener registered for that exact name.
const TYPES = [
  "study.created",
  "round.created",
  "trial.started",
  "trial.metrics",
  "trial.finished",
  "trial.requeued",
  "trial.released",
  "trial.stop_requested",
  "study.cancelled",
  "study.requeued",
  "study.finished",
  "trial.paused",
  "trial.resumed",
  "trial.forked",
  "trial.checkpointed",
  "study.awaiting_review",
  "study.continued",
];
const POLL_MS = 2000; // without events: how often a live page asks again
const IDLE_POLL_MS = 10000; // an ended study changes rarely (retry-failed): ask now and then

/**
 * Follow study `studyId`: `onEvent(type, data)` for each event after `after`, or
 * `refresh()` every few seconds when the service has no event stream (or it broke).
 * Returns { close(), mode } where mode is "events" or "polling".
 */
export async function follow(studyId, { after = 0, ended = false, onEvent, refresh }) {
  let timer = null;
  let source = null;
  let closed = false;
  const handle = { mode: "polling", close };

  function poll(ms) {
    clearInterval(timer);
    timer = setInterval(() => !closed && refresh(), ms);
  }
  function close() {
    closed = true;
    clearInterval(timer);
    source?.close();
    source = null;
    delete document.documentElement.dataset.live;
  }

  if (ended) {
    poll(IDLE_POLL_MS);
    return handle;
  }
  if (!(await hasRoute("GET", EVENTS_PATH)) || typeof EventSource === "undefined") {
    poll(POLL_MS);
    return handle;
  }
  if (closed) return handle;
  handle.mode = "events";
  source = new EventSource(`/api/studies/${studyId}/events?after=${after}`);
  document.documentElement.dataset.live = "events";
  for (const type of TYPES) {
    source.addEventListener(type, (e) => {
      let data = {};
      try {
        data = JSON.parse(e.data);
      } catch {
        /* a malformed frame still says something happened */
      }
      onEvent(type, data, Number(e.lastEventId) || null);
      if (type === "study.finished") {
        // The server ends the stream once the study has ended; EventSource would
        // reconnect forever to an empty stream, so stop here and only check now and then.
        source?.close();
        delete document.documentElement.dataset.live;
        handle.mode = "polling";
        poll(IDLE_POLL_MS);
      }
    });
  }
  source.addEventListener("error", () => {
    // CLOSED means the browser gave up (an HTTP error, not a dropped connection it retries).
    if (source && source.readyState === EventSource.CLOSED && !closed) {
      delete document.documentElement.dataset.live;
      handle.mode = "polling";
      poll(POLL_MS);
    }
  });
  return handle;
}
