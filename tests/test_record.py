"""One face record from detection to embedding: its manifest and shard rows are its own fields."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from maskgen.record import MANIFEST_COLUMNS, SHARD_COLUMNS, FaceRecord, record_schema, records_table


def a_face(**changes) -> FaceRecord:
    rng = np.random.default_rng(1)
    face = FaceRecord(source_key="p1/a.jpg", identity="p1", input_row="p1/a.jpg", face_index=0,
                      box=[10.123, 20.0, 90.5, 110.25], score=0.9987654321, landmarks5=rng.uniform(0, 100, (5, 2)),
                      source="mtcnn", landmarks68=rng.uniform(0, 100, (68, 2)), face_type="0_0", yaw=3.5, blur=0.01,
                      masked=True, mask={"style": "surgical", "colour": [1, 2, 3]}, alignment="eyes",
                      aligned5=rng.uniform(0, 100, (5, 2)), output_key="images/p1/a.jpg",
                      crop_key="crops/p1/a.jpg_face0.jpg", seed=7, versions='{"detector": "x"}', node="n1")
    return face.with_(**changes)


def test_manifest_row_is_the_record_and_reads_back():
    face = a_face()
    row = face.to_row("manifest")
    assert tuple(row) == MANIFEST_COLUMNS
    assert row["mask_style"] == "surgical" and isinstance(row["mask"], str)
    assert len(row["landmarks5"]) == 10 and len(row["landmarks68"]) == 136 and row["box"][0] == 10.12
    back = FaceRecord.from_row(row)
    assert back == face  # rounding happens once, when the record is made
    table = records_table([face], "manifest")
    assert table.schema == record_schema("manifest")
    assert FaceRecord.from_row(table.to_pylist()[0]) == face


def test_shard_row_carries_the_embedding_and_the_face_it_came_from():
    vector = np.arange(8, dtype=np.float32)
    face = a_face(embedding=vector, model_id="sface:abc", mode="plain", similarity="cosine")
    table = records_table([face, a_face(status="no_face", face_index=-1, message="no face found")], "shard", 8)
    assert tuple(table.column_names) == SHARD_COLUMNS
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    first, failed = table.to_pylist()
    assert first["key"] == "p1/a.jpg" and first["landmarks5"] == face.to_row("manifest")["landmarks5"]
    assert first["aligned5"] is not None and first["alignment"] == "eyes" and first["source"] == "mtcnn"
    assert failed["embedding"] is None and failed["status"] == "no_face"
    back = FaceRecord.from_row(first)
    np.testing.assert_array_equal(back.embedding, vector)
    assert back.source_key == face.source_key and back.aligned5 == face.aligned5 and back.landmarks68 is None


def test_a_manifest_row_read_with_pandas_reads_back_as_the_record():
    """`read_manifest` gives pandas rows: their missing text came back as NaN and `image_size` as an
    array, so the record read back was not the one written."""
    for face in (a_face(image_size=[640, 480]), a_face(crop_key=None, output_key=None, yaw=None, mask=None)):
        rows = records_table([face], "manifest").to_pandas().to_dict("records")
        assert FaceRecord.from_row(rows[0]) == face


def test_rows_a_user_writes_by_hand_read_back_or_are_refused_in_words():
    """From a dict, a CSV row or pandas' nullable columns: a dict mask was dropped, the text "False"
    and "0" were masked, face 1.7 was face 1, pd.NA a bare TypeError, a row without its key the
    dataclass's own error, and a mask holding NumPy numbers failed to_row."""
    import csv
    import dataclasses
    import io

    import pandas as pd

    face = a_face()
    assert FaceRecord.from_row(dataclasses.asdict(face)) == face  # its mask a dict, kept
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["source_key", "masked", "face_index"])
    writer.writeheader()
    writer.writerows([{"source_key": "a.jpg", "masked": flag, "face_index": 0} for flag in (False, True)])
    read = [FaceRecord.from_row(r) for r in csv.DictReader(io.StringIO(text.getvalue()))]
    assert [r.masked for r in read] == [False, True] and [r.face_index for r in read] == [0, 0]
    nullable = pd.DataFrame({"source_key": ["a.jpg"], "masked": [None], "seed": [None]}).convert_dtypes()
    assert FaceRecord.from_row(nullable.to_dict("records")[0]) == FaceRecord(source_key="a.jpg")
    for row, why in (({"source_key": "a.jpg", "face_index": 1.7}, "face_index is a whole number, got 1.7"),
                     ({"source_key": "a.jpg", "masked": "maybe"}, "cannot read 'maybe' as masked"),
                     ({"source_key": "a.jpg", "masked": 2}, "cannot read 2 as masked"),
                     ({"source_key": "a.jpg", "seed": "x"}, "seed is a whole number, got 'x'"),
                     ({"key": "a.jpg", "source_key": "b.jpg"}, "a row gives source_key twice, 'a.jpg' and 'b.jpg'"),
                     ({"face_index": 0}, "a row needs the key of its input")):
        with pytest.raises(ValueError, match=why):
            FaceRecord.from_row(row)
    assert FaceRecord.from_row({"source_key": "a.jpg", "face_index": 2.0}).face_index == 2  # pandas' float column
    # a real manifest's scalar columns through pandas' CSV writer and csv.DictReader: empty cells, floats
    # as "7.0"
    rows = records_table([face, face.with_(face_index=1, masked=False, mask=None, seed=None)], "manifest")
    frame = rows.to_pandas()[["source_key", "face_index", "masked", "seed", "message", "mask"]]
    frame["seed"] = frame["seed"].astype(float)  # a column with a gap, as pandas holds it
    read = [FaceRecord.from_row(r) for r in csv.DictReader(io.StringIO(frame.to_csv(index=False)))]
    assert [(r.face_index, r.masked, r.seed) for r in read] == [(0, True, 7), (1, False, None)]
    # a gap beside the other spelling of the key is no second key (an outer merge of manifest and shards)
    assert FaceRecord.from_row({"source_key": "a.jpg", "key": None}).source_key == "a.jpg"
    numpy_mask = a_face(mask={"style": "mine", "width": np.int64(4), "tint": np.float32(0.5), "rgb": np.arange(3)})
    assert FaceRecord.from_row(numpy_mask.to_row("manifest")).mask == {"style": "mine", "width": 4, "tint": 0.5,
                                                                        "rgb": [0, 1, 2]}


def test_a_face_whose_model_gave_nan_is_an_error_row_without_an_embedding():
    """A model that gives NaN for some faces (the check's blank crop passed) had them written as `ok`
    rows; the report then failed at its end, "scores contain NaN or infinity", for every face."""
    vector = np.arange(8, dtype=np.float32)
    vector[3] = np.nan
    face = a_face(status="ok").with_(embedding=vector, model_id="m@sha256:1", mode="plain", similarity="cosine")
    assert face.status == "error" and face.embedding is None and "NaN or infinite" in face.message
    row = records_table([face, a_face(embedding=np.ones(8, np.float32))], "shard", 8).to_pylist()
    assert (row[0]["status"], row[0]["embedding"]) == ("error", None) and row[1]["status"] == "ok"
    assert a_face(embedding=np.full(8, np.inf, np.float32)).status == "error"


def test_an_input_without_a_face_is_a_record_too_and_views_are_checked():
    empty = FaceRecord(source_key="x.jpg", status="corrupt", message="not an image")
    row = empty.to_row("manifest")
    assert row["face_index"] == -1 and row["box"] is None and row["mask"] is None and not empty.found
    with pytest.raises(ValueError, match="view"):
        empty.to_row("report")
    with pytest.raises(ValueError, match="embedding size"):
        record_schema("shard")
    with pytest.raises(ValueError, match="expected 5 points|cannot reshape"):
        FaceRecord(source_key="x", landmarks5=[1.0, 2.0, 3.0]).alignment_points
