"""Zips a function binary as the `bootstrap` of a provided.al2023 package (executable bit set).

    package.py BINARY OUT.zip
"""
import sys
import zipfile

binary, out = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(binary, "rb") as f, zipfile.ZipFile(out, "w", compresslevel=1) as z:
    z.writestr(info, f.read())
