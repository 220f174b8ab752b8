"""``flyjobs batch``: the journals of resumable batches (``fn.map(..., batch="name")``)."""

from __future__ import annotations

import datetime

import click

from .._batches.journal import BatchInfo, SqliteJournal, StoreJournal, check_batch_name, sqlite_path
from .._output.call_lines import shown
from .._results.store import Store, StoreConfig
from .._settings import Settings
from .common import run_async, shows_errors

__all__ = ("batch",)


@click.group("batch")
def batch() -> None:
    """Resumable batches: list their journals, or forget one.

    A map called with batch="NAME" records every input that finished; run again, it runs only
    the inputs not recorded. The journal is in the object store when one is configured
    (FLYJOBS_STORE), else in .flyjobs/journal.sqlite3 in the project.
    """


def _where() -> tuple[Store | None, Settings]:
    settings = Settings.load()
    config = StoreConfig.load(settings.store, embedded=settings.embedded)
    return (Store(config) if config is not None else None), settings


@batch.command("ls")
@shows_errors
def ls() -> None:
    """List the journaled batches: name, finished inputs, last finished (UTC).

    \b
    Example:
        flyjobs batch ls
    """
    store, settings = _where()
    infos: list[BatchInfo]
    if store is not None:
        infos = run_async(lambda: StoreJournal.batches(store))
        where = store.config.url
    else:
        path = sqlite_path(settings)
        infos = SqliteJournal.batches(path)
        where = str(path)
    if not infos:
        click.echo(f"no batches journaled in {where}")
        return
    for info in infos:
        at = datetime.datetime.fromtimestamp(info.updated_at, datetime.UTC)
        # A batch's name is a key of the store, which anyone who writes the bucket can make.
        name = shown(info.name, output=False)
        click.echo(f"{name}\t{info.finished} finished\t{at:%Y-%m-%d %H:%M:%S}")


@batch.command("rm")
@click.argument("name")
@shows_errors
def rm(name: str) -> None:
    """Forget the batch NAME: its next run starts from the first input.

    \b
    Example:
        flyjobs batch rm nightly-2026-11-30
    """
    check_batch_name(name)
    store, settings = _where()
    if store is not None:
        count = run_async(lambda: StoreJournal.remove(store, name))
    else:
        count = SqliteJournal.remove(sqlite_path(settings), name)
    if count == 0:
        raise click.ClickException(f"no batch {name!r} is journaled (see `flyjobs batch ls`)")
    click.echo(f"forgot batch {name!r} ({count} finished inputs)")
