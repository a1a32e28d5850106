import numpy as np

from operators.base import Operator, apply_to_live_rows, live_mask, object_column, reject


class AddLength(Operator):
    name = "add_length"
    input_columns = ("uri",)
    output_columns = ("length",)

    def __call__(self, batch):
        self.seen = list(batch["uri"])
        lengths = []
        for i, uri in enumerate(batch["uri"]):
            if uri == "bad":
                reject(batch, i, self.name, "bad_uri", "the uri is bad")
                lengths.append(None)
            else:
                lengths.append(len(uri))
        return {**batch, "length": lengths}


def make_batch(uris, reasons):
    return {
        "uri": object_column(uris),
        "reject_stage": object_column(["x" if r else None for r in reasons]),
        "reject_reason": object_column(reasons),
        "reject_detail": object_column([None] * len(uris)),
    }


def test_operator_sees_only_live_rows_and_order_is_kept():
    op = AddLength()
    batch = make_batch(["aa", "b", "cccc", "dd"], [None, "earlier", None, "earlier"])
    out = apply_to_live_rows(op, batch)
    assert op.seen == ["aa", "cccc"]
    assert list(out["uri"]) == ["aa", "b", "cccc", "dd"]
    assert list(out["length"]) == [2, None, 4, None]
    assert list(out["reject_reason"]) == [None, "earlier", None, "earlier"]


def test_reject_marks_only_that_row():
    out = apply_to_live_rows(AddLength(), make_batch(["ok", "bad"], [None, None]))
    assert list(live_mask(out)) == [True, False]
    assert out["reject_stage"][1] == "add_length"
    assert out["reject_detail"][1] == "the uri is bad"


def test_all_rejected_batch_is_passed_through_without_calling():
    op = AddLength()
    out = apply_to_live_rows(op, make_batch(["a"], ["earlier"]))
    assert not hasattr(op, "seen")
    assert out["reject_reason"][0] == "earlier"


def test_object_column_keeps_nested_values():
    col = object_column([[1, 2], np.zeros(3), b"x", None])
    assert col.shape == (4,) and col.dtype == object
