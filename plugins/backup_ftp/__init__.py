"""Built-in backup target ``ftp``: a folder on an FTP or explicit FTPS server (ftplib).

Uploads stream into ``.partial-NAME`` on a data connection driven by the writer, resume
with REST/APPE after a broken connection, and are renamed into place (RNFR/RNTO) after a
SIZE check. The password is a ``writeOnly`` option and never appears in a message.
"""

from hypervisor_panel.hookspecs import hookimpl

from .target import FtpTarget


@hookimpl
def register_backup_targets(panel):
    return [FtpTarget]
