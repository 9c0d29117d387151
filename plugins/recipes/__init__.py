"""Built-in recipe sources: a local folder of ``*.sh`` scripts, and an HTTP(S) URL (an
archive, an index of script URLs, or one script). Recipes use VMmanager's format (see
``hypervisor_panel.recipe_format``)."""

from hypervisor_panel.hookspecs import hookimpl

from .folder import FolderSource
from .url import UrlSource


@hookimpl
def register_recipe_sources(panel):
    return [FolderSource(), UrlSource()]
