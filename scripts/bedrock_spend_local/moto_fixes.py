"""moto, corrected so that the local stack measures and holds the proxy, not moto.

moto's TransactWriteItems deep-copies every table on each call (to roll back on failure), so
each ledger write costs O(table size), a long run O(n^2) in time, and the copies churn memory;
its request routing lists a directory per request; and its server handles requests in
threads with no locking, so two concurrent transactions that ``ADD`` to the same item can lose
one update (DynamoDB applies each atomically; the proxy's monthly totals rely on it).
:func:`faster_moto` saves only the items a transaction touches, writes one transaction or
update at a time, and lists the modules once. The local stack applies it while it runs, so
`make run`, `make bench` and the soak test share this one copy.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

_depth = 0  # nested uses (a benchmark around a local stack) patch once
_lock = threading.Lock()


@contextlib.contextmanager
def faster_moto() -> Iterator[None]:
    global _depth
    with _lock:
        _depth += 1
        outermost = _depth == 1
    if not outermost:
        try:
            yield
        finally:
            with _lock:
                _depth -= 1
        return
    try:
        with _patched():
            yield
    finally:
        with _lock:
            _depth -= 1


@contextlib.contextmanager
def _patched() -> Iterator[None]:
    from moto import backends
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    original_update = DynamoDBBackend.update_item
    writing = threading.RLock()

    def update_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        with writing:
            return original_update(self, *args, **kwargs)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with writing:
            _transact(self, transact_items)

    def _transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        try:
            for entry in transact_items:
                operation = next(iter(entry.values()))
                table = self.get_table(operation["TableName"])
                names = [n for n in (table.hash_key_attr, table.range_key_attr) if n]
                key = operation.get("Key") or {name: operation["Item"][name] for name in names}
                hash_key, range_key = self.get_keys_value(table, key)
                saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        except Exception:  # noqa: BLE001 - an invalid request: moto's own code reports it
            saved = []
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                holder = table.items[hash_key] if range_key is not None else table.items
                slot = range_key if range_key is not None else hash_key
                if before is None:
                    holder.pop(slot, None)
                else:
                    holder[slot] = before
            raise

    listed = tuple(backends.list_of_moto_modules())
    list_modules = backends.list_of_moto_modules
    backends.list_of_moto_modules = lambda: listed
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    Table.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    try:
        yield
    finally:
        backends.list_of_moto_modules = list_modules
        DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]
        DynamoDBBackend.update_item = original_update  # type: ignore[method-assign]
        del Table.__deepcopy__  # type: ignore[attr-defined]
