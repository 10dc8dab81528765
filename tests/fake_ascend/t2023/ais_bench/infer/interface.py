"""Fake ``ais_bench.infer.interface`` of the 2023-06 build.

Follows Ascend/tools @ 9d6da90fd0d3e5d232676c7a4527f7d92ac70e5c,
``ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py``: ``sumary()`` and ``reset_sumaryinfo()`` (no
``summary``), no ``free_resource``, an instance ``finalize()`` that unloads and tears ACL down for the process, and
``infer(feeds, mode='static')`` that acts only on ``dymshape``/``dymdims`` (any other mode, ``dymbatch`` included,
is ignored; static mode does not call ``set_staticbatch``). The C++ side is ``aclruntime.py`` beside this package.
"""
import aclruntime
import numpy as np


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False, loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        options = aclruntime.session_options()
        options.log_level = 1 if debug else 2
        options.loop = loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]

    def get_inputs(self):
        self.intensors_desc = self.session.get_inputs()
        return self.intensors_desc

    def get_outputs(self):
        self.outtensors_desc = self.session.get_outputs()
        return self.outtensors_desc

    def set_staticbatch(self):
        self.session.set_staticbatch()

    def set_dynamic_batchsize(self, dymBatch):  # noqa: N803
        self.session.set_dynamic_batchsize(dymBatch)

    def run(self, feeds, out_array=False):
        return self.session.run(self.outputs_names, list(feeds))

    def reset_sumaryinfo(self):
        self.session.reset_sumaryinfo()

    def sumary(self):
        return self.session.sumary()

    def finalize(self):
        if hasattr(self.session, 'finalize'):
            self.session.finalize()

    def infer(self, feeds, mode='static', custom_sizes=100000):
        inputs = []
        for feed in feeds:
            if type(feed) is not np.ndarray:
                raise RuntimeError('type:{} invalid'.format(type(feed)))
            inputs.append(feed)
        if mode in ('dymshape', 'dymdims'):
            raise NotImplementedError("dymshape/dymdims are not faked")
        return self.run(inputs, out_array=True)
