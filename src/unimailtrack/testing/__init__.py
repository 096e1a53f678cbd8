"""The adapter kit: the rules every adapter keeps, as a test suite an adapter's author runs.

Subclass :class:`AdapterContract` in a pytest module, name the adapter class and fill in four
hooks; pytest then runs every rule against the adapter::

    from unimailtrack.testing import AdapterContract, Keyed

    class TestAcmeAdapter(AdapterContract):
        adapter_class = AcmeAdapter
        dsn = "acme://KEY@default?webhook_secret=s3cret"

        def keyed(self, **options):            # an adapter that can send and verify
            ...
        def webhook(self, keyed, tracking_id, recipient):   # a signed 'delivered' request
            ...
        def unknown_webhook(self, keyed):      # a signed request with an event type unknown
            ...
        def send_response(self, request):      # the provider's answer to a send request
            ...

``docs/adding-a-provider.md`` walks through writing an adapter and passing the suite. Every
built-in adapter passes it in unimailtrack's own tests. This package is never imported by
``import unimailtrack``; it needs pytest.
"""

from __future__ import annotations

from unimailtrack.testing._contract import GARBAGE_BODIES, AdapterContract, Keyed

__all__ = ["GARBAGE_BODIES", "AdapterContract", "Keyed"]
