"""The catalogue's folders on this machine: which are cached, fetching one ahead of time, freeing the space of one
(never of the model a library is bound to, unless forced)."""

from __future__ import annotations

from clipdex.retrieval.errors import ClipdexError, NotFound, Refused
from clipdex.retrieval.models import catalogue
from clipdex.retrieval.models.hub import Progress, cached_folder, is_repo_id, remove_cached
from clipdex.retrieval.models.hub_download import hub_folder
from clipdex.retrieval.models.identity import ModelIdentity


def _hub_id(name: str) -> tuple[str, str | None]:
    """The hub id and pinned commit a `models pull/rm NAME` means: a catalogue name, else any hub ORG/NAME."""
    entry = catalogue.find(name)
    if entry is not None:
        return entry.hub_id, entry.revision
    if is_repo_id(name):
        return name, None
    raise NotFound(f"unknown model {name!r}: give a name from `clipdex models` or a hub ORG/NAME")


def listing(bound: ModelIdentity | None = None) -> list[dict]:
    """Every catalogue entry with whether it is cached here and whether the library (`bound`) uses it."""
    rows = []
    for entry in catalogue.ENTRIES:
        row = entry.as_json()
        row["cached"] = cached_folder(entry.hub_id, entry.revision) is not None
        row["in_use"] = bound is not None and bound.name.lower() == entry.hub_id.lower()
        rows.append(row)
    return rows


def pull(name: str, progress: Progress | None = None) -> dict:
    """Fetch a model folder now (nothing happens when it is cached already)."""
    repo, revision = _hub_id(name)
    entry = catalogue.by_hub_id(repo)
    folder, commit = hub_folder(repo, revision, progress, entry.label() if entry else repo)
    return {"hub_id": repo, "revision": commit, "folder": str(folder)}


def remove(name: str, bound: ModelIdentity | None = None, force: bool = False) -> dict:
    """Free a cached model folder's space; refused for the library's own model unless `force`."""
    repo, _ = _hub_id(name)
    if bound is not None and bound.name.lower() == repo.lower() and not force:
        raise Refused(f"the library is bound to {repo}: removing it would make its next query fetch it again "
                      f"(or fail offline); use --force to remove it anyway")
    freed = remove_cached(repo)
    if not freed:
        raise ClipdexError(f"{repo} is not in the local Hugging Face cache: nothing to remove")
    return {"hub_id": repo, "freed_mb": round(freed / 1e6, 1)}
