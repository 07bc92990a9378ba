"""`zmm cleanup`: the vocabulary of a cleanup plan (`plan`) and building and
applying it (`cleanup`). Files are touched only through `zmm.assets`.
"""
