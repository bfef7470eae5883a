from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from billing.chain.rpc import ChainClient, RpcError
from billing.devtools.dev_indexer import DevIndexer
from billing.models import Network


class Command(BaseCommand):
    help = "Watch the local chain and send signed contract webhooks to the API, like a hosted indexer."

    def add_arguments(self, parser):
        parser.add_argument("--api-url", default="http://127.0.0.1:8000")
        parser.add_argument("--network", default="anvil-local")
        parser.add_argument("--interval", type=float, default=1.0)
        parser.add_argument("--once", action="store_true", help="Scan up to the head, deliver, and exit.")

    def handle(self, *args, **options):
        network = Network.objects.filter(slug=options["network"]).first()
        if network is None:
            raise CommandError(f"No network '{options['network']}'.")
        indexer = DevIndexer(
            api_url=options["api_url"], network_slug=network.slug, client=ChainClient.for_network(network)
        )
        self.stdout.write(f"dev indexer: {network.slug} -> {options['api_url']}")
        while True:
            try:
                indexer.scan()
            except RpcError as exc:
                self.stderr.write(f"chain unavailable: {exc}")
            indexer.flush()
            if options["once"]:
                self.stdout.write(f"delivered {indexer.sent}, queued {len(indexer.queue)}")
                return
            time.sleep(options["interval"])
