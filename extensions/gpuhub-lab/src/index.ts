/**
 * gpuhub-lab: "Run as distributed job" for notebooks, the "GPU jobs" side panel, and this
 * server's GPUs in the status bar (with the idle warning and "Give the GPUs back").
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import {
  INotebookModel,
  INotebookTracker,
  NotebookPanel
} from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { CommandRegistry } from '@lumino/commands';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { initialState, toRequest } from './choices';
import { GpuClient, JobsClient } from './client';
import { askJobOptions } from './dialog';
import { errorMessage, showJobError } from './errors';
import { addGpuStatus } from './gpustatus';
import { runJobIcon } from './icons';
import { JobsPanel } from './panel';

export namespace CommandIDs {
  export const runAsJob = 'gpuhub:run-as-job';
  export const showJobs = 'gpuhub:show-jobs';
}

/** Open the dialog for a notebook, save it, submit it, and show the job. */
export async function runAsJob(
  client: JobsClient,
  notebook: NotebookPanel,
  onSubmitted: (job: Awaited<ReturnType<JobsClient['submit']>>) => void
): Promise<void> {
  let options;
  try {
    options = await client.options();
  } catch (error) {
    await showJobError('Cannot run as a job', error);
    return;
  }
  const path = notebook.context.path;
  const answer = await askJobOptions({
    client,
    options,
    state: initialState(options),
    path
  });
  if (answer === null) {
    return;
  }
  try {
    await notebook.context.save();
  } catch (error) {
    await showJobError(
      'Could not save the notebook',
      `The job was not submitted: ${errorMessage(error)}`
    );
    return;
  }
  try {
    const job = await client.submit(
      toRequest(path, answer.options, answer.state)
    );
    onSubmitted(job);
  } catch (error) {
    await showJobError('Job not submitted', error);
  }
}

/** Adds the "Run as job" button to every notebook's toolbar. */
class RunJobButton implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  constructor(private readonly _commands: CommandRegistry) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      icon: runJobIcon,
      label: 'Run as job',
      tooltip: 'Run as distributed job',
      dataset: { 'data-testid': 'gpuhub-run-as-job' },
      onClick: () => {
        // Make this notebook the current one, so the command acts on it.
        void this._commands.execute(CommandIDs.runAsJob, { id: panel.id });
      }
    });
    button.addClass('gpuhub-RunJobToolbarButton');
    panel.toolbar.insertItem(10, 'gpuhubRunAsJob', button);
    return new DisposableDelegate(() => button.dispose());
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'gpuhub-lab:plugin',
  description:
    'Run a notebook as a distributed GPU training job and follow its jobs.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const client = new JobsClient();
    const panel = new JobsPanel(client);
    app.shell.add(panel, 'right', { rank: 650 });
    restorer?.add(panel, 'gpuhub-jobs');

    const notebookFor = (args: { id?: unknown }): NotebookPanel | null => {
      if (typeof args.id === 'string') {
        return tracker.find(nb => nb.id === args.id) ?? null;
      }
      return tracker.currentWidget;
    };

    app.commands.addCommand(CommandIDs.runAsJob, {
      label: 'Run as distributed job',
      caption:
        'Run this notebook on several workers and GPUs, charged to a group quota',
      icon: runJobIcon,
      isEnabled: args => notebookFor(args) !== null,
      execute: async args => {
        const notebook = notebookFor(args);
        if (notebook === null) {
          return;
        }
        await runAsJob(client, notebook, job => {
          panel.showJob(job);
          app.shell.activateById(panel.id);
        });
      }
    });

    app.commands.addCommand(CommandIDs.showJobs, {
      label: 'Show GPU jobs',
      icon: panel.title.icon,
      execute: () => app.shell.activateById(panel.id)
    });

    if (palette) {
      palette.addItem({ command: CommandIDs.runAsJob, category: 'GPU jobs' });
      palette.addItem({ command: CommandIDs.showJobs, category: 'GPU jobs' });
    }

    tracker.currentChanged.connect(() =>
      app.commands.notifyCommandChanged(CommandIDs.runAsJob)
    );

    app.docRegistry.addWidgetExtension(
      'Notebook',
      new RunJobButton(app.commands)
    );
  }
};

const gpuStatusPlugin: JupyterFrontEndPlugin<void> = {
  id: 'gpuhub-lab:gpu-status',
  description:
    'This server\'s GPUs in the status bar, the idle warning with "Keep it", and "Give the GPUs back".',
  autoStart: true,
  requires: [IStatusBar],
  activate: (_app: JupyterFrontEnd, statusBar: IStatusBar) => {
    addGpuStatus(statusBar, new GpuClient());
  }
};

export default [plugin, gpuStatusPlugin];
