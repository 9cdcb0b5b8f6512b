"""Op coverage on PyTorch's own op database (OpInfo): every sample either converts and matches eager
PyTorch through the interpreter, or is reported unsupported with a reason. Never a crash, never a
silent mismatch (see torch2x.opinfo for the states and tolerances)."""
import pytest
import torch

pytest.importorskip("expecttest")  # OpInfo's module imports it

from torch2x import opinfo  # noqa: E402

OPS = opinfo.op_db()
# The first float32 sample of every entry that converts and matches (407 measured 2026-12-01, see
# docs/supported_ops.md); a small margin below it so that OpInfo's own changes do not fail the suite.
FLOOR = 400
BAD = ("crash", "mismatch")
# Beyond the first float32 sample (which the count test runs), each entry runs one more sample, rotating
# over a second float32 sample and the first int64, int32 and bool samples, to keep within the time budget.
MORE = ((torch.float32, 1), (torch.int64, 0), (torch.int32, 0), (torch.bool, 0))


@pytest.fixture(scope="module")
def first_float32():
    return opinfo.first_float32(OPS)


def _explain(outcomes):
    return "\n".join(str(o) for o in outcomes)


def test_first_float32_sample_of_every_entry(first_float32):
    bad = [o for o in first_float32 if o.state in BAD]
    assert not bad, _explain(bad)
    for o in first_float32:
        assert o.state in opinfo.STATES
        if o.state == "unsupported":
            assert o.detail, f"{o.entry}: reported without a reason"
    matched = sum(o.state == "match" for o in first_float32)
    print(opinfo.summary(first_float32))
    assert matched >= FLOOR, opinfo.summary(first_float32)


@pytest.mark.parametrize("index", range(len(OPS)), ids=[opinfo.entry_name(op) for op in OPS])
def test_more_samples(index):
    op = OPS[index]
    dtype, pick = MORE[index % len(MORE)]
    outcomes = list(opinfo.run([op], (dtype,), picks=(pick,)))
    bad = [o for o in outcomes if o.state in BAD]
    assert not bad, _explain(bad)


def test_uninitialized_outputs_compare_by_shape_and_dtype():
    (op,) = [op for op in OPS if op.name == "empty_like" and not op.variant_test_name]
    outcomes = list(opinfo.run([op], (torch.float32,), picks=(0,)))
    assert [o.state for o in outcomes] == ["match"], _explain(outcomes)


def test_random_ops_are_reported():
    ops = [op for op in OPS if op.name in ("bernoulli", "rand_like", "randn_like") and not op.variant_test_name]
    outcomes = list(opinfo.run(ops, (torch.float32,), picks=(0,)))
    assert len(outcomes) == 3 and all(o.state == "unsupported" and "random" in o.detail for o in outcomes), \
        _explain(outcomes)


def test_a_mismatch_is_caught():
    # the comparison itself can fail: a network result that is off by 1e-3 relative is a mismatch
    ref = torch.ones(10)
    assert opinfo._compare(ref * (1 + 1e-3), ref, False) is not None
    assert opinfo._compare(ref * (1 + 1e-6), ref, False) is None
    assert opinfo._compare(torch.tensor([1, 2]), torch.tensor([1, 3]), False) is not None
    assert opinfo._compare(torch.tensor([1, 2]), torch.tensor([1, 3]), False, tied_indices=True) is None
