"""Names of the message stages and record keys that sites and the coordinator exchange.

Both sides import these instead of spelling strings, so a typo is an AttributeError at import
time rather than a silently missing field on the wire.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PROTOCOL_VERSION", "Key", "MessageType", "RecordName"]

PROTOCOL_VERSION = 1


class MessageType(StrEnum):
    """Flower message types (routed to the ClientApp handlers of the same name)."""

    IDENTIFY = "query.identify"
    KEYGEN = "query.keygen"  # the custodian makes the run's federation key
    INSTALL = "query.install"  # the other sites open it
    ADVERTISE = "train.advertise"
    SHARE = "train.share"
    TRAIN = "train"  # train and upload
    CONSISTENCY = "train.consistency"
    RELEASE = "train.release"
    APPLY = "evaluate.apply"


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
    SURVIVORS = "survivors"
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
    EVAL_LOSS = "eval-loss"
    EVAL_ACCURACY = "eval-accuracy"
    EVAL_AUC = "eval-auc"
    EVAL_EXAMPLES = "eval-examples"
    GLOBAL_ACCURACY = "global-accuracy"
    GLOBAL_AUC = "global-auc"
    GLOBAL_EXAMPLES = "global-examples"
