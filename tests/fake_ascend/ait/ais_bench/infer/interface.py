"""Fake ``ais_bench.infer.interface`` of the ait build.

Follows mjlovesz/sync-ait (the GitHub mirror of Ascend ait), ``ait/components/benchmark/ais_bench/infer/
interface.py``, the stored version with ``summary()``, ``free_resource()`` and a static ``finalize()`` (the index
gives no commit for it; stored file id 1562909112): ``infer(feeds, mode='static', custom_sizes=100000,
out_array=True)`` dispatches through ``infer_mode_switch``: ``static`` calls ``set_staticbatch()`` (the reset of an
earlier ``set_dynamic_batchsize``), ``dymbatch`` takes the batch from the first dynamic dimension of the feeds,
an unknown mode is a ``RuntimeError``. No path checks. The C++ side is ``aclruntime.py`` beside this package.
"""
import aclruntime
import numpy as np


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False, loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        self.options = aclruntime.session_options()
        self.options.log_level = 1 if debug else 2
        self.options.loop = loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, self.options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]
        self.intensors_desc = self.session.get_inputs()
        self.outtensors_desc = self.session.get_outputs()
        self.infer_mode_switch = {"static": self._static_prepare, "dymbatch": self._dymbatch_prepare}

    @staticmethod
    def finalize():
        if hasattr(aclruntime.InferenceSession, 'finalize'):
            aclruntime.InferenceSession.finalize()

    def get_inputs(self):
        self.intensors_desc = self.session.get_inputs()
        return self.intensors_desc

    def get_outputs(self):
        self.outtensors_desc = self.session.get_outputs()
        return self.outtensors_desc

    def set_staticbatch(self):
        self.session.set_staticbatch()

    def set_dynamic_batchsize(self, dym_batch):
        self.session.set_dynamic_batchsize(dym_batch)

    def get_max_dym_batchsize(self):
        return self.session.get_max_dym_batchsize()

    def run(self, feeds, out_array=False):
        return self.session.run(self.outputs_names, list(feeds))

    def reset_summaryinfo(self):
        self.session.reset_sumaryinfo()

    def infer(self, feeds, mode='static', custom_sizes=100000, out_array=True):
        inputs, shapes = [], []
        for feed in feeds:
            if type(feed) is not np.ndarray:
                raise RuntimeError('type:{} invalid'.format(type(feed)))
            infer_input = feed if feed.flags.c_contiguous else np.ascontiguousarray(feed)
            shapes.append(infer_input.shape)
            inputs.append(infer_input)
        if self.infer_mode_switch.get(mode) is not None:
            self.infer_mode_switch.get(mode)(shapes, custom_sizes)
        else:
            raise RuntimeError('wrong infer_mode:{}, only support "static","dymbatch","dymhw", "dymdims",'
                               '"dymshape"'.format(mode))
        return self.run(inputs, out_array)

    def free_resource(self):
        if hasattr(self.session, "free_resource"):
            self.session.free_resource()

    def summary(self):
        return self.session.sumary()

    def _static_prepare(self, shapes, custom_sizes):
        self.set_staticbatch()

    def _dymbatch_prepare(self, shapes, custom_sizes):
        indesc = self.get_inputs()
        if len(shapes) != len(indesc):
            raise RuntimeError("input datas and intensors nums not matched!")
        for i, shape in enumerate(shapes):
            for j, dim in enumerate(shape):
                if indesc[i].shape[j] < 0:
                    self.set_dynamic_batchsize(dim)
                    return
                if indesc[i].shape[j] != dim:
                    raise RuntimeError("input datas and intensors dim not matched!")
        raise RuntimeError("not a dymbatch model!")
