"""Built-in OS template sources: a local folder, an HTTP(S) index, an FTP index.

Each repository is an ``index.json`` (format: ``hypervisor_panel.os_templates``) next to
the files it lists.
"""

from hypervisor_panel.hookspecs import hookimpl

from .folder_source import FolderSource
from .ftp_source import FtpSource
from .http_source import HttpSource


@hookimpl
def register_os_template_sources(panel):
    return [FolderSource(), HttpSource(), FtpSource()]
