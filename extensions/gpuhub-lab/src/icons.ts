import { LabIcon } from '@jupyterlab/ui-components';

/** Three stacked workers with a play mark: "run as a distributed job". */
const RUN_JOB_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="2" y="3" width="12" height="4" rx="1"/>
    <rect x="2" y="10" width="12" height="4" rx="1"/>
    <rect x="2" y="17" width="12" height="4" rx="1"/>
    <path d="M16 7.5v9l6.5-4.5z"/>
  </g>
</svg>`;

/** A list of jobs with a GPU chip. */
const JOBS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M7 4h2v2h2V4h2v2h2V4h2v2h1a2 2 0 0 1 2 2v1h2v2h-2v2h2v2h-2v1a2 2 0 0 1-2 2h-1v2h-2v-2h-2v2h-2v-2H9v2H7v-2H6a2 2 0 0 1-2-2v-1H2v-2h2v-2H2V9h2V8a2 2 0 0 1 2-2h1zm-1 4v8h12V8zm2 2h8v4H8z"/>
  </g>
</svg>`;

export const runJobIcon = new LabIcon({
  name: 'gpuhub-lab:run-job',
  svgstr: RUN_JOB_SVG
});

export const jobsIcon = new LabIcon({
  name: 'gpuhub-lab:jobs',
  svgstr: JOBS_SVG
});
