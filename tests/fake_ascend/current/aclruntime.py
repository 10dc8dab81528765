"""``aclruntime`` as the ait and current builds bind it: ``SetContext`` in every call (multi-thread support,
2023-09), ``free_resource()`` per session, and ``InferenceSession.finalize()`` a static, process-wide ACL teardown
(mjlovesz/sync-ait ait/components/benchmark/backend/python/src/PyInferenceSession/PyInferenceSession.cpp and
TensorContext.cpp; ASCEND.md §2.6)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fake_acl  # noqa: E402

dtype = fake_acl.dtype


class session_options:  # noqa: N801
    def __init__(self):
        self.loop, self.log_level, self.acl_json_path = 1, 2, None


class InferenceSession(fake_acl.InferenceSession):
    context_per_call = True

    @staticmethod
    def finalize():
        fake_acl.ACL.finalize()
