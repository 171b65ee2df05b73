"""Command-line inputs shared by the commands that verify envelopes or send them.

``--bundle TD=PATH`` (trust bundles), ``--anchors DIR`` plus ``--endorsement FILE`` (the anchor
registry), ``HOST:PORT`` addresses and ``--tier N|name``. Every problem becomes a
:class:`~gateway.cli.common.UserFacingError` naming the option and the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from config.policy import DEFAULT_TIERS
from gateway.cli.common import UserFacingError
from identity.anchor_contract import AnchorResolver
from identity.bundle import BundleSet, InvalidBundle, TrustBundle, load_bundle_file
from identity.endorsement import MAX_ENDORSEMENT_BYTES, InvalidEndorsement
from identity.registry import AnchorRegistry, RegistryBuilder, RegistryLoadError, load_registry
from identity.spiffe_id import InvalidSpiffeID, parse_trust_domain

MAX_PORT = 65535


def parse_bundles(specs: Iterable[str]) -> BundleSet:
    """``TD=PATH`` strings to a :class:`BundleSet`.

    Raises:
        UserFacingError: a spec without ``=``, a bad trust domain, an unreadable or invalid
            bundle file, or two bundles for one trust domain.
    """
    bundles: list[TrustBundle] = []
    seen: set[str] = set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserFacingError(f"--bundle {spec!r}: expected TRUST_DOMAIN=PATH")
        try:
            td = parse_trust_domain(name)
        except InvalidSpiffeID as exc:
            raise UserFacingError(f"--bundle {spec!r}: {exc}") from None
        if td.name in seen:
            raise UserFacingError(f"--bundle: two bundles for trust domain {td.name!r}")
        seen.add(td.name)
        try:
            bundles.append(load_bundle_file(path, td))
        except InvalidBundle as exc:
            raise UserFacingError(f"--bundle {td.name}: {exc}") from None
    return BundleSet(bundles)


def build_registry(
    anchors_dir: str | None,
    endorsements: Iterable[str],
    bundles: BundleSet,
    *,
    now: int,
    warn: Callable[[str], None] | None = None,
) -> AnchorRegistry:
    """The anchor registry from a directory of ``*.endorsement`` files plus listed files.

    A file in the directory that does not verify is skipped (as the daemon does) and reported
    through ``warn``; an explicitly listed ``--endorsement`` file that does not verify is an error.

    Raises:
        UserFacingError: the directory cannot be listed, or a listed file is unreadable/invalid.
    """
    if anchors_dir is not None:
        try:
            report = load_registry(anchors_dir, bundles, now=now)
        except RegistryLoadError as exc:
            raise UserFacingError(f"--anchors: {exc}") from None
        if warn is not None:
            for rejected in report.rejected:
                warn(f"skipped endorsement {rejected.path}: {rejected.error}")
        builder = RegistryBuilder(report.registry)
    else:
        builder = RegistryBuilder()
    for path in endorsements:
        try:
            with Path(path).open("rb") as f:
                data = f.read(MAX_ENDORSEMENT_BYTES + 1)
        except OSError as exc:
            raise UserFacingError(f"--endorsement {path}: cannot read: {exc.strerror}") from None
        if len(data) > MAX_ENDORSEMENT_BYTES:
            raise UserFacingError(
                f"--endorsement {path}: larger than {MAX_ENDORSEMENT_BYTES} bytes"
            )
        try:
            builder.add(data, bundles, now=now)
        except InvalidEndorsement as exc:
            raise UserFacingError(f"--endorsement {path}: {exc}") from None
    return builder.build()


class ReloadingRegistry:
    """A resolver factory for long-running receivers: the bundles are fixed, the anchors
    directory is re-read at most once a second, so rotated endorsements are picked up without a
    restart. A directory that becomes unreadable keeps the last good registry."""

    def __init__(self, anchors_dir: str, bundles: BundleSet, clock: Callable[[], float]) -> None:
        """Raises: UserFacingError: the anchors directory is unusable at start."""
        self._dir = anchors_dir
        self._bundles = bundles
        self._clock = clock
        self._at = int(clock())
        try:
            self._registry = load_registry(anchors_dir, bundles, now=self._at).registry
        except RegistryLoadError as exc:
            raise UserFacingError(f"--anchors: {exc}") from None

    def __call__(self) -> AnchorResolver:
        now = int(self._clock())
        if now != self._at:
            self._at = now
            # An unreadable directory keeps the last good snapshot; the next second tries again.
            with contextlib.suppress(RegistryLoadError):
                self._registry = load_registry(self._dir, self._bundles, now=now).registry
        return self._registry


def parse_address(value: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) to a pair.

    Raises:
        UserFacingError: no port, or a port outside 0..65535.
    """
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise UserFacingError(f"{option} {value!r}: expected HOST:PORT")
    return host, int(port_text)


def parse_tier(value: str) -> int:
    """A trust tier as a number 0..255 or a default tier name (public, internal, restricted).

    Raises:
        UserFacingError: neither.
    """
    if value.isdigit() and int(value) <= 255:
        return int(value)
    named = DEFAULT_TIERS.value_of(value)
    if named is None:
        names = ", ".join(n for n, _ in DEFAULT_TIERS.names)
        raise UserFacingError(f"--tier {value!r}: expected 0..255 or one of {names}")
    return named


def hex_bytes(value: str, size: int, option: str) -> bytes:
    """Exactly ``size`` bytes written as hex.

    Raises:
        UserFacingError: not hex, or the wrong length.
    """
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise UserFacingError(f"{option}: not hexadecimal") from None
    if len(raw) != size:
        raise UserFacingError(f"{option}: expected {size} bytes ({2 * size} hex digits)")
    return raw


def echo_warning(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
