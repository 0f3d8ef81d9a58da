"""The feature cache: HDF5 part files, crash-safe, resumable, one writer at a time.

A cache is a directory:

    CACHE/
      cache.json          settings (FeatureSettings) + storage dtype, written once, atomically
      write.lock          the write lock (an advisory flock) and the record of its holder
      annotations.txt     the AVE-format rows, when the job had annotations (optional)
      splits/NAME.txt     split rows (train/val/test, AVE format), when the job had them
      parts/part-*.h5     committed part files (the set of parts is the index)

or a single `.h5` file with the same layout as one part (what `avel extract --out x.h5`
and `avel merge --out x.h5` write). A part file:

    /                     attrs: avel_format, feature_settings (JSON), storage_dtype,
                          annotations and split.NAME (AVE text, optional), and
                          setting.NAME: each feature setting as its own attr
    /videos/<key>/        one group per video; attrs id, source_path, duration_s, num_segments
        visual            (T, 7, 7, 512) float32|float16, pool5 (HWC), chunks of <= 64 KiB, each
                          with a fletcher32 checksum HDF5 checks on every read
        audio             (T, 128)
        visual_vec        (T, 512), optional: pool5 mean over 7x7
    /failures/<key>       attrs id, source_path, kind, error

Keys: a video's group name is `encode_key(id)`, an injective encoding of its id (keys.py).

Modules: keys (ids <-> HDF5 names), meta (CacheMeta, settings compatibility), parts (the part
writer and its commit rule), store (FeatureCache: reading, listing, failures, creation,
verify and repair), labels (annotations and splits of a re-run compared and applied), merge
(merge_caches, --on-conflict), lock (the write lock, temporary names that name their writer).

Rules for writers (what makes crashed, concurrent and full-disk writes safe):

1. One writer per cache. A run that writes takes the cache's write lock first
   (`WriteLock.acquire`, done by `create_or_open`): an advisory `flock` on CACHE/write.lock,
   held until the run ends and released by the kernel when its process dies (locks work on
   local filesystems and NFSv4 across machines). The file records the holder (pid, host,
   command, since); a second writer is refused with that record in a one-line error. Nested
   acquisitions within one process share the lock.
2. Parts. A part is written to `parts/.tmp-HOST-PIDNS-PID-START-RANDOM.h5` (its writer's
   identity: host name, pid namespace, pid and the process's start time), fsynced and renamed
   to a unique `parts/part-*.h5`: renaming is atomic, so a reader sees whole parts or
   nothing. A `PartWriter` needs no lock of its own: processes that work for the lock holder's
   run (extraction workers, possibly on other machines sharing the directory) commit their
   own parts concurrently while the holder keeps the lock for the whole run.
3. Temporary files are removed by their writer (renamed on success, deleted on failure).
   Otherwise only the lock holder removes them, when it takes the lock, and only those whose
   writer is provably dead: same host and pid namespace, and no process with that pid and
   start time. Anything else (another host, an older avel's temp file) is left alone.
4. Readers never write. Opening, listing, reading, merging or exporting a cache changes
   nothing in it: a read-only cache is readable, and reading while a run writes is safe.
5. Full disk. A part is written as the features come (a batch of segments at a time, so
   memory never holds a video's features whole); any write error (ENOSPC) discards the
   part's temporary file and is one clear error ("no space left on device while writing
   PART"); committed parts are untouched and a rerun resumes. cache.json, annotations.txt
   and split files are written through core's atomic writer (temp + rename), so a failed
   creation leaves nothing that makes a later run refuse the directory.

Resuming skips ids already in a part (attributes only: `--verify` reads every video first and
takes damaged ones out, `FeatureCache.repair`). Annotations and splits a re-run gives replace
differing stored ones, said in one line (labels.py).
"""
