-- zmm spool schema: the node definitions (ComfyUI's /object_info) of each
-- backend's server, recorded by its worker when it connects, every
-- worker.files_refresh_s and after a missing-file rejection, beside the model
-- files in `backends`. Enqueue converts UI-format workflows and checks node
-- classes against them without asking a server. One row per backend name;
-- `defs` is the answer as gzip'd compact JSON (tens of kB), rewritten only when
-- `sha256` (of that JSON) changes; `classes` is the JSON list of class names.
CREATE TABLE backend_nodes (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    classes TEXT NOT NULL,
    defs BLOB NOT NULL,
    read_at TEXT NOT NULL
);
