"""``aclruntime`` as the 2023-06 build (Ascend/tools @ 9d6da90) binds it: the ACL context is set only when the
session is made and destroyed (PyInferenceSession.cpp sets it in Init/Destroy/Finalize, not in run), and the
session's own ``finalize`` unloads the model and then finalises ACL for the process."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fake_acl  # noqa: E402

dtype = fake_acl.dtype


class session_options:  # noqa: N801
    def __init__(self):
        self.loop, self.log_level, self.acl_json_path = 1, 2, None


class InferenceSession(fake_acl.InferenceSession):
    context_per_call = False

    def finalize(self):
        self.finalize_session()
