"""Dataset formats (MXNet RecordIO, verification .bin, OFRecord), converters and OneFlow input pipelines."""
