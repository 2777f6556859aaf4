"""Post-run file steps: copy, move or delete files when a job finishes.

A job carries up to 20 steps, from the submit request (`steps`) or, when the request has no `steps`, from the
notebook's metadata (`metadata.nbrelay.steps`, same schema); `"steps": []` disables the notebook's steps.

A step::

    {"action": "copy" | "move" | "delete",
     "source": "report" | "notebook" | "<glob relative to the workspace>",
     "to": "<destination path template>",        # copy and move only
     "when": "success" | "always",              # default "success"
     "overwrite": false}                        # copy and move only; default false

- `source` "report" is the job's HTML report and "notebook" the executed .ipynb; both live in the data dir, where
  the report history keeps them, so they can be copied but not moved or deleted. Anything else is a glob of
  workspace files ("scratch/*.csv", "out/**/*.tmp"; `**` is any number of folders, a trailing `**` every file
  below). Globs never enter symlinked folders and match files and symlinks, never folders. To name a workspace
  file called "report" or "notebook", write "./report".
- `to` is a workspace path with fields: {notebook} (file name without .ipynb), {notebook_dir} (its folder,
  "." at the top), {date} (YYYY-MM-DD) and {time} (HHMMSS) of the finish time in UTC, {job} (id), {state},
  {user}, and the job's parameters by name (those the request gave, else the notebook's literal default, written
  into the step when the job is submitted; a field named like a built-in means the built-in). Values are
  str()-ed and "/", "\\" and control characters (NUL included) in them become "_", so a value never makes
  folders; only {notebook_dir} may hold "/". A `to` ending in "/" is a folder: the file keeps its name there.
  Folders are created as needed. Write a literal brace as "{{" or "}}".
- The rendered destination goes through `Workspace.resolve`: one that leaves the workspace (say a parameter
  value ".." in a folder position) fails that file. An existing destination fails it too ("exists") unless
  `overwrite` is true; a folder is never replaced. Copies go to a temporary name in the destination folder
  and are renamed into place, so a destination is either untouched or complete.
- `move` takes regular files (not symlinks) of a glob. `delete` removes regular files and symlinks (the link,
  never its target) whose own location is inside the workspace; folders are never deleted.
- With per-user folders (auth modes token and header) steps stay in the owner's areas: globs see only files in
  them, and everything written, moved or deleted must be in the owner's home or the shared folder.

Execution (`run_steps`): steps run in order when the job has finished and before its final state is saved.
"success" steps are skipped unless the job succeeded. A failing step, or a failing file within a step, does
not stop the rest; each step's result says what happened. Step failures never change the job's state.
"""

from nbrelay.steps.run import run_steps
from nbrelay.steps.templates import BUILTIN_FIELDS, fill_fields, render, safe_value, template_values
from nbrelay.steps.validate import MAX_STEPS, notebook_steps, read_notebook_steps, validate_steps
from nbrelay.steps.writing import StepFailed

__all__ = [
    "BUILTIN_FIELDS",
    "MAX_STEPS",
    "StepFailed",
    "fill_fields",
    "notebook_steps",
    "read_notebook_steps",
    "render",
    "run_steps",
    "safe_value",
    "template_values",
    "validate_steps",
]
