"""Names of the message stages and record keys that sites and the coordinator exchange.

Both sides import these instead of spelling strings, so a typo is an AttributeError at import
time rather than a silently missing field on the wire.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PROTOCOL_VERSION", "Key", "MessageType", "RecordName"]

PROTOCOL_VERSION = 1


class MessageType(StrEnum):
    """The stages a coordinator asks of a site: one member per stage, used on both sides.

    The value is Flower's message type (`category.action`, or the bare category for a round's
    training), which routes it to the ClientApp's handler; the same member names the stage in
    the site's dispatch table, its size limits and the local socket to the site's worker. The
    he+ss stages' signed statements carry `action` as their stage word
    (`fedseal.secure_agg.messages.Stage`).
    """

    IDENTIFY = "query.identify"
    KEYGEN = "query.keygen"  # the custodian makes the run's federation key
    INSTALL = "query.install"  # the other sites open it
    ADVERTISE = "train.advertise"
    SHARE = "train.share"
    TRAIN = "train"  # train and upload
    CONSISTENCY = "train.consistency"
    RELEASE = "train.release"
    APPLY = "evaluate.apply"

    @property
    def category(self) -> str:
        """Flower's category: `query`, `train` or `evaluate`."""
        return self.value.partition(".")[0]

    @property
    def action(self) -> str | None:
        """Flower's action within the category (None for the round's training itself)."""
        return self.value.partition(".")[2] or None

    @property
    def word(self) -> str:
        """The stage's one word in logs and refusals: the action, or `train`."""
        return self.action or self.category

    @classmethod
    def parse(cls, value: object) -> MessageType:
        """The member named by `value`; an unknown stage is refused, never defaulted."""
        try:
            return cls(str(value))
        except ValueError:
            raise ValueError(f"unknown stage {str(value)[:64]!r}") from None


class RecordName(StrEnum):
    """Names of the records inside a message's RecordDict."""

    CONFIG = "config"
    RESULT = "result"
    METRICS = "metrics"


class Key(StrEnum):
    """Keys inside the config and result records."""

    PROTOCOL_VERSION = "protocol-version"
    RUN_ID = "run-id"
    ROUND = "round"
    SITE = "site"
    MODE = "mode"
    # model and training plan (identical for every site of a run)
    BASE_MODEL = "base-model"
    LABELS = "labels"
    LORA_RANK = "lora-rank"
    LORA_ALPHA = "lora-alpha"
    LORA_DROPOUT = "lora-dropout"
    SEED = "seed"
    STEPS = "steps"
    LEARNING_RATE = "learning-rate"
    MAX_LENGTH = "max-length"
    ROUNDS = "rounds"  # planned rounds of the run (a site calibrates its DP noise for them)
    ADAPTER = "adapter"  # which parameters train: run_plan.AdapterKind
    # adapter state
    EXPECTED_DIGEST = "expected-digest"
    START_DIGEST = "start-digest"
    ADAPTER_DIGEST = "adapter-digest"
    APPLIED_ROUND = "applied-round"
    CATCHUP_ROUNDS = "catchup-rounds"
    CATCHUP_PAYLOADS = "catchup-payloads"
    # update and aggregate
    UPDATE = "update"
    NUM_EXAMPLES = "num-examples"
    AGGREGATE = "aggregate"
    EVALUATE_GLOBAL = "evaluate-global"
    # secure aggregation
    PROTOCOL_PARAMS = "protocol-params"
    SAMPLED = "sampled"
    DIRECTORY = "directory"
    CUSTODIAN = "custodian"
    SEALED_SITES = "sealed-sites"
    SEALED_KEYS = "sealed-keys"
    SEALED_KEY = "sealed-key"
    PUBLIC_CONTEXT = "public-context"
    SIGNED = "signed"
    SIGNED_LIST = "signed-list"
    RELAYED = "relayed"
    KEY_ROUNDS = "key-rounds"  # a key batch: the rounds an advertise or share stage is for
    RELAYED_COUNTS = "relayed-counts"  # how many of `relayed` belong to each of `key-rounds`
    SIGNED_COUNTS = "signed-counts"  # how many of `signed-list` belong to each of `key-rounds`
    SURVIVORS = "survivors"
    # in a train reply of a round whose k is the site's pinned members: its signed share
    # release, so the round needs no consistency or release stage ("Unanimous rounds")
    SHARE_RELEASE = "share-release"
    CLIPPED = "clipped"
    CATCHUP_FIELDS = "catchup-fields"
    # differential privacy (the site's ledger entry for the round, and a refusal to train)
    PRIVACY = "privacy"
    PRIVACY_SIGNATURE = "privacy-signature"  # the site's signature over its ledger statement
    DECLINED = "declined"
    # statements a site signed earlier whose reply may have been lost (identify asks for them)
    RECOVER_RUNS = "recover-runs"  # Flower run ids whose kept statements the site sends back
    RECOVERED = "recovered"  # list of statement JSON texts
    RECOVERED_SIGNATURES = "recovered-signatures"  # the site's signature over each, same order
    # site facts
    ADAPTER_SIZE = "adapter-size"
    LAYOUT_DIGEST = "layout-digest"
    TRAIN_EXAMPLES = "train-examples"
    TEST_EXAMPLES = "test-examples"
    DEVICE = "device"
    SCENARIO = "scenario"
    # metrics
    TRAIN_LOSS = "train-loss"
    TRAIN_SECONDS = "train-seconds"
    WORK_SECONDS = "work-seconds"  # the site worker's time on the stage (every reply)
    EVAL_LOSS = "eval-loss"
    EVAL_ACCURACY = "eval-accuracy"
    EVAL_AUC = "eval-auc"
    EVAL_EXAMPLES = "eval-examples"
    GLOBAL_ACCURACY = "global-accuracy"
    GLOBAL_AUC = "global-auc"
    GLOBAL_EXAMPLES = "global-examples"
