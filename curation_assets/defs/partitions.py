import dagster as dg

# One partition per landing source (a video, an image folder, an archive);
# keys come from curation_assets.core.ids.source_id_for.
videos = dg.DynamicPartitionsDefinition(name="videos")

# One partition per labeling round: round-0001, round-0002, ...
labeling_rounds = dg.DynamicPartitionsDefinition(name="labeling_rounds")
