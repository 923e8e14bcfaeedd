"""Wiring of the research path for the pipeline: the ``research`` sink and the FHIR endpoint (docs/consent.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.config import Config, influx_token
from gateway.dataspace.endpoint import ObservationEndpoint, Signer, load_token
from gateway.dataspace.patients import ConsentDb
from gateway.dataspace.pseudonym import open_pseudonymiser
from gateway.metrics import GatewayMetrics
from gateway.provenance.identity import GatewayIdentity
from gateway.sinks.research import ResearchSink

TOKEN_FILE = "research.token"


@dataclass
class ResearchPath:
    sink: ResearchSink
    endpoint: ObservationEndpoint | None
    max_batches: int
    max_points: int

    @property
    def routes(self) -> list[web.RouteDef]:
        return [] if self.endpoint is None else self.endpoint.routes()


def research_path(
    config: Config, state_dir: Path, identity: GatewayIdentity, metrics: GatewayMetrics | None = None
) -> ResearchPath:
    rc = config.research
    pseudo = open_pseudonymiser(state_dir, rc)
    ConsentDb.open(state_dir).close()  # created (and its lookup key) before any reader opens it read-only
    store = None
    limits = (5000, 50_000)
    if rc.store is not None:
        from gateway.sinks.influx import InfluxSink

        s = rc.store
        store = InfluxSink(
            "research",
            s.url,
            s.org,
            s.bucket,
            influx_token(s, "research.store"),
            timeout_s=s.timeout_s,
            max_body_bytes=s.max_body_bytes,
            verify_tls=s.verify_tls,
            parallel_writes=s.parallel_writes,
        )
        limits = (s.max_batches_per_write, s.max_points_per_write)
    endpoint = None
    if rc.endpoint:
        token = load_token(rc.endpoint_token_file or state_dir / TOKEN_FILE)
        endpoint = ObservationEndpoint(
            state_dir,
            pseudo,
            Signer(identity.did, identity.sign),
            token,
            page_size=rc.page_size,
            max_page_size=rc.max_page_size,
        )
    return ResearchPath(ResearchSink(state_dir, pseudo, store, metrics), endpoint, *limits)
