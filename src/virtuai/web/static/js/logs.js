// Following one task's log (stdout or stderr) as it grows, shared by the job and service
// pages: read by offset (1 MiB at most per request, 16 a round), then again every poll
// until the end of the log; the newest MiB or so stays on the page.

import { ApiError, get, query } from "./api.js";

const POLL_MS = 1500;
const MAX_SHOWN = 2 * 1024 * 1024;

// Fills `pre` with the log of task `task` of job `jobId`, and `status` with how far it
// is; returns a function that stops following.
export function followLog(pre, status, jobId, task, stream) {
  let stopped = false;
  let timer = null;
  let offset = 0;
  pre.textContent = "";

  async function read() {
    let eof = false;
    try {
      for (let round = 0; round < 16; round += 1) {
        const chunk = await get(`/jobs/${jobId}/logs${query({ task, stream, offset })}`);
        if (stopped) return;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        if (chunk.data) pre.append(chunk.data);
        // Keep the page light on huge logs: the newest MiB or so stays.
        if (pre.textContent.length > MAX_SHOWN) {
          pre.textContent = `[… earlier output not shown: ${offset} bytes read so far]\n${pre.textContent.slice(-MAX_SHOWN / 2)}`;
        }
        if (atBottom) pre.scrollTop = pre.scrollHeight;
        const grew = chunk.offset !== offset;
        offset = chunk.offset;
        eof = chunk.eof;
        if (eof || !grew) break;
      }
      status.textContent = eof ? "end of log" : "following…";
    } catch (e) {
      if (stopped) return;
      // A task that has not started yet has no log: not an error worth a red box.
      status.textContent = e instanceof ApiError && e.status === 404 ? "no log yet" : e.message;
    }
    if (!eof && !stopped) timer = setTimeout(read, POLL_MS);
  }

  read();
  return () => { stopped = true; clearTimeout(timer); };
}
