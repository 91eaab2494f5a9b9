"""The pipeline: one list of named stages; compile runs it, tools stop after a stage."""
from __future__ import annotations

import torch
from lowering_support import TARGET, Net

from passes.pipeline import PIPELINE, STAGES, PipelineOptions, run_pipeline, shift_pipeline
from shiftcomp.config import ShiftConfig
from shiftcomp.frontend import import_model


def test_shift_pipeline_is_a_readable_list() -> None:
    names = [p.info.name for p in shift_pipeline(TARGET)]
    assert names[:3] == ["FoldConstant", "LowerShiftOps", "DeadCodeElimination"]
    assert "LegalizeOps" in names and "FuseOps" in names and "VMShapeLower" in names


def test_run_pipeline_stops_after_a_named_stage_and_records_state() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4))).eval()
    mod = import_model(model, torch.randn(1, 3, 6, 6)).mod
    fused, state = run_pipeline(mod, PipelineOptions(target=TARGET), until="fuse")
    assert list(state.modules) == list(STAGES[:STAGES.index("fuse") + 1])
    assert state.audit is not None and state.audit.datapath_multiplies == 0
    assert list(dict.fromkeys(state.lifted.layers)) == ["conv", "fc"] and set(state.report.layers) == {"conv", "fc"}
    assert "R.call_tir" in fused["main"].script()
    assert [s.name for s in PIPELINE] == list(STAGES)


def test_float_baseline_skips_only_the_shift_lowering() -> None:
    torch.manual_seed(0)
    model = Net(ShiftConfig(act_bits=(4, 4))).eval()
    mod = import_model(model, torch.randn(1, 3, 6, 6)).mod
    _, state = run_pipeline(mod, PipelineOptions(target=TARGET, lower=False), until="audit")
    assert not state.report.layers and not state.lifted.arrays and state.audit.other_multiplies > 0
