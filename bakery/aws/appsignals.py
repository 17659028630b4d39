"""Turning on CloudWatch Application Signals: `StartDiscovery`, once per account and
region, before the first instance reports. Calling it again changes nothing."""

from __future__ import annotations

from collections.abc import Sequence

from bakery.aws.clients import aws_client, aws_errors
from bakery.aws.images import regions_of
from bakery.aws.progress import say
from bakery.config import BakeryConfig


def enable_application_signals(configs: Sequence[BakeryConfig]) -> list[str]:
    """Start Application Signals discovery in every region the configs use; the regions."""
    regions = regions_of(configs)
    for region in regions:
        client = aws_client("application-signals", region)
        # The first call creates the service-linked role: it needs
        # iam:CreateServiceLinkedRole (see `invoke iam`, the pipeline policy).
        with aws_errors(f"enabling Application Signals in {region}"):
            client.start_discovery()
        say(f"[green]Application Signals enabled[/] in {region}")
    return regions
