"""The registry: the sources a run knows, in the order it asks them and reports them.

Adding a source is one folder under `etl.sources` that implements
`etl.sources.offline.OfflineSource` (data on disk: `offline_sources`) or
`etl.sources.network.NetworkSource` (a service: `network_sources`), one line here, and its
name and block in `etl.core.vocabulary`. The run's steps and network phases
(`etl.refresh.pipeline`, `etl.refresh.network`) go through these lists and name no source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etl.core.errors import SettingError
from etl.core.vocabulary import Source
from etl.refresh.config import DEFAULT_LISTS_DIR, RefreshConfig
from etl.sources.classification.lists import list_files
from etl.sources.classification.source import ClassificationSource
from etl.sources.cymru.client import Connect
from etl.sources.cymru.phase import CymruSource
from etl.sources.greynoise.phase import GreyNoiseSource
from etl.sources.greynoise.transport import Transport
from etl.sources.maxmind.source import MaxMindSource
from etl.sources.network import NetworkSource
from etl.sources.offline import OfflineSources


@dataclass(frozen=True)
class Transports:
    """How the network sources reach their services: None is the real way (TCP for Team Cymru,
    HTTP for GreyNoise). A caller may pass its own (`etl.refresh.pipeline.refresh`): the
    policy tests run a whole refresh against services in memory. A run closes a GreyNoise
    transport when its phase ends, as it closes its own."""

    cymru: Connect | None = None
    greynoise: Transport | None = None


REAL = Transports()  # TCP for Team Cymru, HTTP for GreyNoise


def network_sources(
    config: RefreshConfig,
    search_budget: int | None = None,
    daily_budget: bool = False,
    transports: Transports = REAL,
) -> list[NetworkSource]:
    """Every network source, set up from ``config``. GreyNoise may spend ``search_budget``
    Searches (None: no daily budget); with a ``daily_budget`` it asks in priority order."""
    return [
        CymruSource(config.cymru_settings(), config.freshness, config.clock, transports.cymru),
        GreyNoiseSource(
            config.greynoise_settings(search_budget),
            config.greynoise_api_key or "",
            config.clock,
            by_priority=daily_budget,
            transport=transports.greynoise,
        ),
    ]


def offline_sources(config: RefreshConfig) -> OfflineSources:
    """Every offline source, its data open (a skipped one is not opened). Raises the source's
    usage error (exit 2) for data named or found that cannot be used."""
    maxmind = (
        MaxMindSource.open(
            config.maxmind_asn, config.maxmind_city, config.maxmind_dir, config.clock()
        )
        if config.enabled(Source.MAXMIND)
        else MaxMindSource()
    )
    labels = (
        lists_source(config) if config.enabled(Source.CLASSIFICATION) else ClassificationSource()
    )
    return OfflineSources((maxmind, labels))


def lists_source(config: RefreshConfig, now: datetime | None = None) -> ClassificationSource:
    """The labels' lists of ``config``'s lists folder, read at ``now`` (the run's clock); a list
    whose URL is empty is switched off, so not missing. Raises `SettingError` for a folder
    named that does not exist (a typo would silently mean no labels); the default one may
    not exist yet (no lists: the labels are not asked)."""
    folder = config.lists_dir
    if folder != DEFAULT_LISTS_DIR and not folder.exists():
        raise SettingError(
            "lists_dir",
            f"{folder}: no such folder (a typo? `honeypot-etl lists update --lists-dir "
            f"{folder}` makes it and fetches the lists; --skip classification: no labels)",
        )
    urls = config.list_urls()
    off = [item.name for item in list_files(urls.providers) if not urls.of(item)]
    return ClassificationSource.open(
        config.lists_dir, config.lists_cloud_providers, now or config.clock(), off
    )
