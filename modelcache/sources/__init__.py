"""L3 sources: oss://, s3://, file://, http(s)://; ranged parallel download and verification."""
