"""Dagster resources: object store, vector store, embedder, expectations."""

from resources.embedder import EmbedderResource
from resources.expectations import ExpectationsResource
from resources.object_store import ObjectStoreResource
from resources.vector_store import VectorStoreResource

__all__ = ["EmbedderResource", "ExpectationsResource", "ObjectStoreResource", "VectorStoreResource"]
