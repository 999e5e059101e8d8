"""What model server A serves new sessions with: an evaluator per model under B's
current Paillier key, B's X25519 key, and the fingerprint over both that clients pin.

A key rotation replaces the whole :class:`ServingKeys` in one assignment, so a session
never pairs one key's evaluator with another key's X25519 half; sessions in flight keep
the one they opened with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppinfer.errors import PPInferError, UnknownModelError
from ppinfer.protocol.entry_store import EntryStore
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.session_keys import key_server_fingerprint
from ppinfer.protocol.session_messages import ModelOffer, ServerOffer

__all__ = ["MAX_NAME_CHARS", "ServingKeys"]

#: Longest model name a client may ask for.
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class ServingKeys:
    evaluators: dict[str, ModelEvaluator]
    x25519: bytes
    fingerprint: str
    #: each model's preprocessing store under this key (none: every request a miss)
    stores: dict[str, EntryStore] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        evaluators: dict[str, ModelEvaluator],
        key_server_x25519: bytes,
        stores: dict[str, EntryStore] | None = None,
    ) -> ServingKeys:
        if not evaluators:
            raise PPInferError("a model server needs at least one model")
        public = next(iter(evaluators.values())).public
        fingerprint = key_server_fingerprint(public.n_bytes, key_server_x25519)
        return cls(evaluators, key_server_x25519, fingerprint, dict(stores or {}))

    def store(self, evaluator: ModelEvaluator) -> EntryStore:
        """The store of ``evaluator``'s model (an empty one, capacity 0, if none was made:
        every request makes its own entry)."""
        name = evaluator.plan.name
        store = self.stores.get(name)
        if store is None:
            store = self.stores.setdefault(name, EntryStore(evaluator, _no_link, capacity=0))
        return store

    def close_stores(self) -> None:
        for store in self.stores.values():
            store.close()

    def evaluator(self, name: str) -> ModelEvaluator:
        """The model ``name`` (empty: the only one), or a refusal naming those served."""
        if len(name) > MAX_NAME_CHARS:
            raise PPInferError(f"a model name has at most {MAX_NAME_CHARS} characters")
        if not name and len(self.evaluators) == 1:
            return next(iter(self.evaluators.values()))
        evaluator = self.evaluators.get(name)
        if evaluator is None:
            raise UnknownModelError(
                f"no model {name!r} on this server; it serves: {', '.join(sorted(self.evaluators))}"
            )
        return evaluator

    def offer(self, name: str, client_aided: bool) -> ServerOffer:
        """What a client is told of model ``name`` and of the keys (GetServerInfo)."""
        evaluator = self.evaluator(name)
        plan, public, numerics = evaluator.plan, evaluator.public, evaluator.numerics
        model = ModelOffer(
            name=plan.name,
            input_shape=tuple(plan.input_shape),
            outputs=plan.outputs,
            input_frac_bits=plan.input_format.frac_bits,
            input_value_bits=plan.input_format.value_bits,
            output_frac_bits=numerics.sealed_scale,
            output_modulus_bits=numerics.sealed_modulus_bits,
            aided_output_frac_bits=numerics.output_scale,
            mask_sigma=plan.masks.sigma,
            client_activation=plan.client_activation,
            layers=evaluator.steps,
        )
        return ServerOffer(
            model=model,
            paillier_bits=public.bits,
            paillier_n=public.n_bytes,
            paillier_key_id=public.key_id,
            key_server_x25519=self.x25519,
            key_id=self.fingerprint,
            client_aided=client_aided,
        )


def _no_link(*_: object) -> KeyLink:
    raise PPInferError("this store has no filler")
