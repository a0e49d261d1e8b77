"""dvpsim's bank: a deposit-account payment network that oracle certificates drive.

The payment leg of a DvP settlement is a payment from the buyer's account to the seller's
at this bank. The oracle network instructs it in two phases, each step authorized by a
BLS threshold certificate of the committee the bank trusts:

1. prevalidate (PREPARE certificate): the bank records the instruction and places a hold
   on the payer's funds, or rejects it with a reason (insufficient funds, unknown account,
   currency mismatch, expired);
2. execute (COMMIT certificate): the hold is consumed and the money moves, irrevocably,
   as one balanced double-entry journal entry; or cancel (ABORT certificate): the hold is
   released.

Layout: ``terms`` (the certified terms hash, the bank's certificate domain), ``ledger``
(the sans-I/O rules), ``storage``/``sqlite_storage`` (in-memory and durable SQLite WAL
storages with the same constraints), ``authorization`` (certificates), ``service`` (API
operations with idempotency, no HTTP), ``signing`` (HMAC request auth, Ed25519 callbacks),
``server`` (aiohttp on loopback, group commit), ``webhooks`` (outbox delivery),
``faults`` (scenario fault controls), ``openapi``, ``client`` (what nodes use),
``process`` and ``devcommittee`` (start a real bank, make real certificates), ``cli``.
Interfaces: docs/INTERFACES.md, section bank_adapter.

Nothing here may move money without a verified certificate, or answer a request before
its effects are durable.
"""
