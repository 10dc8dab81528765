"""Fake ``ais_bench.infer.interface`` of the current gitee build.

Follows Yanguan619/aclruntime (a GitHub mirror of the gitee Ascend/tools), ``ais-bench_workload/tool/ais_bench/
ais_bench/infer/interface.py`` @ 045b17c7e3818f3d27a68db3d56d736bebafd40b, with ``interface_check.py`` @
0131474a2cb8dd0da4cb227266215903aaef97d8 and ``common/path_security_check.py`` @
0035c0b86bbdc1f8e06b2dd1bcc7fea3cabd7ef9: the ait behaviour (``summary``, ``free_resource``, static ``finalize``,
static/dymbatch modes) plus ``check_model_path_legality`` (a ``ValueError`` for a symlink, a group- or
other-writable file, a file of another owner, a suffix other than ``.om``, characters outside
``[_A-Za-z0-9/.-]`` in the absolute path), ``check_device_range_valid`` (0..255), feeds that must be a non-empty
list, and ``set_context()``. The C++ side is ``aclruntime.py`` beside this package.
"""
import os
import re
import stat

import aclruntime
import numpy as np


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False, loop: int = 1):
        check_model_path_legality(model_path)
        check_device_range_valid(device_id)
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

    def set_context(self):
        self.session.set_context()

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
        if not isinstance(feeds, list) or not feeds:
            raise ValueError("the list be checked is not a list!")
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


PATH_WHITE_LIST_REGEX = re.compile(r"[^_A-Za-z0-9/.-]")


def check_model_path_legality(value):
    """interface_check.check_model_path_legality -> path_security_check.check_path_legality(READ, suffix om)."""
    if not value:
        raise RuntimeError("empty model path!")
    path = os.path.abspath(value)
    if PATH_WHITE_LIST_REGEX.search(path):
        raise ValueError("The path string is illegal. Please check.")
    if not os.path.isfile(path):
        raise ValueError(f"The path:{value} is not a file.")
    st = os.stat(path)
    if os.path.islink(path):
        raise ValueError(f"The path:{value} is illegal. Please check the error log for more detail.")
    if st.st_uid != os.geteuid() and st.st_gid not in os.getgroups():
        raise ValueError(f"The path:{value} is illegal. Please check the error log for more detail.")
    if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(f"The path:{value} is illegal. Please check the error log for more detail.")
    if os.path.splitext(path)[1] != ".om":
        raise ValueError(f"The suffix of path:{value} not in ['om']. Please check.")


def check_device_range_valid(value):
    if not isinstance(value, int):
        raise TypeError(f"device:{value} is not a integer!")
    if value < 0 or value > 255:
        raise ValueError(f"device:{value} is illegal. legal value range is [0, 255]")
