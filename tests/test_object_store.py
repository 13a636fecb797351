import io

import boto3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from resources.object_store import LocalObjectStore, S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "root")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return S3ObjectStore(f"s3://{bucket}/some/prefix", client)


def test_bytes_and_tables_round_trip(store):
    store.put_bytes("frames/v/000001.jpg", b"jpeg")
    assert store.get_bytes("frames/v/000001.jpg") == b"jpeg"
    assert store.exists("frames/v/000001.jpg") and not store.exists("frames/v/000002.jpg")
    df = pd.DataFrame({"frame_id": ["a", "b"], "x": [1.5, 2.5]})
    store.write_table("tables/t/p.parquet", df)
    assert store.read_table("tables/t/p.parquet").equals(df)
    assert store.key_for_uri(store.uri("frames/v/000001.jpg")) == "frames/v/000001.jpg"


def test_vector_tables_round_trip_and_only_repeating_columns_are_dictionary_encoded(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    vectors = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    df = pd.DataFrame({"frame_id": [f"v/{i:06d}" for i in range(50)], "video_id": "v",
                       "similarity": np.linspace(0, 1, 50), "vector": list(vectors)})  # fmt: skip
    store.write_table("tables/frame_embeddings/v.parquet", df)
    back = store.read_table("tables/frame_embeddings/v.parquet")
    assert np.array_equal(np.stack(back["vector"]), vectors) and back["frame_id"].tolist() == df["frame_id"].tolist()
    meta = pq.ParquetFile(io.BytesIO(store.get_bytes("tables/frame_embeddings/v.parquet"))).metadata.row_group(0)
    dictionary = {meta.column(i).path_in_schema: "RLE_DICTIONARY" in meta.column(i).encodings
                  for i in range(meta.num_columns)}  # fmt: skip
    assert dictionary == {"frame_id": True, "video_id": True, "similarity": False, "vector.list.element": False}


def test_listing_is_sorted_paginated_and_scoped_to_the_folder(store):
    for i in range(7):
        store.put_bytes(f"landing/cam/{i:02d}.mp4", b"x" * i)
    store.put_bytes("landing-other/x.mp4", b"x")
    listed = list(store.list("landing", page_size=2))
    assert [o.key for o in listed] == [f"landing/cam/{i:02d}.mp4" for i in range(7)]
    assert [o.size for o in listed] == list(range(7))


def test_fingerprint_changes_when_content_changes(store):
    store.put_bytes("a.mp4", b"one")
    before = next(store.list("")).fingerprint
    store.put_bytes("a.mp4", b"two!")
    assert next(store.list("")).fingerprint != before


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", ""], ids=["parent", "nested parent", "empty"])
def test_keys_cannot_leave_the_root(store, key):
    with pytest.raises(ValueError, match="outside the storage root"):
        store.put_bytes(key, b"x")


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("t/a.parquet", b"1" * 1000)
    store.put_bytes("t/a.parquet", b"2" * 10)
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["a.parquet"]
    assert store.get_bytes("t/a.parquet") == b"2" * 10
