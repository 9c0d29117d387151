"""Built-in backup target ``local``: a folder on the panel's machine.

Archives are plain files; a write goes to ``.partial-NAME`` in the same folder (fsync, then
``os.replace`` on publish) and a broken write resumes by appending.
"""

from hypervisor_panel.hookspecs import hookimpl

from .target import LocalTarget


@hookimpl
def register_backup_targets(panel):
    return [LocalTarget]
