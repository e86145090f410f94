import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { JobsApiError } from './client';

/** The message to show for an error: the service's message verbatim when it sent one. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** An error dialog whose body carries the service's message verbatim. */
export async function showJobError(
  title: string,
  error: unknown
): Promise<void> {
  const field = error instanceof JobsApiError ? error.field : null;
  await showDialog({
    title,
    body: (
      <div className="gpuhub-ErrorBody">
        <p
          className="gpuhub-ErrorMessage"
          data-testid="gpuhub-job-error"
          role="alert"
        >
          {errorMessage(error)}
        </p>
        {field !== null && (
          <p className="gpuhub-ErrorField">
            Option: <code>{field}</code>
          </p>
        )}
      </div>
    ),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
