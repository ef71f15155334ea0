// The C ABI between the C++ glue and Rust (crates/oxblob-rocksdb/src/ffi.rs).
//
// Rust -> C++ direction ("oxb_*"): implemented in Rust, called by the FileSystem in
// oxblob_fs.cc. Every call returns 0 or a Linux errno; on error *err receives a message
// allocated by Rust, released with oxb_free_string.
//
// C++ -> Rust direction ("oxbdb_*"): implemented in oxblob_db.cc, called by the Rust Db API.
// Errors come back as a RocksDB Status code and a message allocated with malloc, released
// with oxbdb_free.
#pragma once
#include <stddef.h>
#include <stdint.h>

extern "C" {

typedef struct OxbMount OxbMount;
typedef struct OxbFile OxbFile;

enum { OXB_OPEN_READ = 0, OXB_OPEN_TRUNCATE = 1, OXB_OPEN_APPEND = 2 };

void oxb_free_string(char* s);
int oxb_mount(const char* uri, OxbMount** out, char** err);
int oxb_release(OxbMount* m, char** err);
int oxb_open(OxbMount* m, const char* path, int mode, OxbFile** out, char** err);
int oxb_file_read(OxbFile* f, uint64_t off, char* buf, size_t len, size_t* got, char** err);
int oxb_file_append(OxbFile* f, const char* data, size_t len, char** err);
int oxb_file_write_at(OxbFile* f, uint64_t off, const char* data, size_t len, char** err);
int oxb_file_flush(OxbFile* f, char** err);
int oxb_file_sync(OxbFile* f, char** err);      // blobfs fsync: data, size and times
int oxb_file_datasync(OxbFile* f, char** err);  // blobfs fdatasync: data and size
int oxb_file_readahead(OxbFile* f, uint64_t off, uint64_t len, char** err);  // a hint
int oxb_file_truncate(OxbFile* f, uint64_t size, char** err);
uint64_t oxb_file_size(OxbFile* f);
int oxb_file_close(OxbFile* f, char** err);  // frees f, even on error
int oxb_stat(OxbMount* m, const char* path, uint64_t* size, uint64_t* mtime_ns, int* is_dir,
             char** err);
// Names separated by '\0'; *names is released with oxb_free_buf(*names, *len).
int oxb_readdir(OxbMount* m, const char* path, char** names, size_t* len, char** err);
void oxb_free_buf(char* p, size_t len);
int oxb_unlink(OxbMount* m, const char* path, char** err);
int oxb_rename(OxbMount* m, const char* from, const char* to, char** err);
int oxb_mkdir(OxbMount* m, const char* path, char** err);
int oxb_rmdir(OxbMount* m, const char* path, char** err);
// Directory fsync: every namespace operation completed before it becomes durable.
int oxb_fsync_dir(OxbMount* m, const char* path, char** err);
int oxb_truncate_path(OxbMount* m, const char* path, uint64_t size, char** err);
int oxb_lock(OxbMount* m, const char* path, char** err);
int oxb_unlock(OxbMount* m, const char* path, char** err);
int oxb_free_space(OxbMount* m, uint64_t* free_bytes, char** err);
// Alignment of direct reads: the io unit on a mount without a data cache, else 0.
size_t oxb_direct_align(OxbMount* m);

// ---- DB shim (oxblob_db.cc) ----
typedef struct OxbDb OxbDb;
typedef struct OxbBatch OxbBatch;
typedef struct OxbIter OxbIter;

typedef struct OxbDbOptions {
  int create_if_missing;
  int error_if_exists;
  uint64_t write_buffer_size;       // 0: RocksDB's default
  uint64_t target_file_size_base;   // 0: default
  uint64_t max_bytes_for_level_base;  // 0: default
  int disable_auto_compactions;
  int paranoid_checks;
} OxbDbOptions;

typedef struct OxbStatus {
  int code;     // rocksdb::Status::Code; 0 = OK
  int subcode;  // rocksdb::Status::SubCode
  char* msg;    // malloc'd, or NULL
} OxbStatus;

void oxbdb_free(void* p);
OxbDb* oxbdb_open(const char* fs_uri, const char* path, const OxbDbOptions* o, OxbStatus* st);
void oxbdb_put(OxbDb* db, const char* k, size_t kl, const char* v, size_t vl, int sync,
               OxbStatus* st);
void oxbdb_delete(OxbDb* db, const char* k, size_t kl, int sync, OxbStatus* st);
// *found = 0 when missing; *val malloc'd.
void oxbdb_get(OxbDb* db, const char* k, size_t kl, char** val, size_t* vl, int* found,
               OxbStatus* st);
OxbBatch* oxbdb_batch_new(void);
void oxbdb_batch_put(OxbBatch* b, const char* k, size_t kl, const char* v, size_t vl);
void oxbdb_batch_delete(OxbBatch* b, const char* k, size_t kl);
void oxbdb_batch_free(OxbBatch* b);
void oxbdb_write(OxbDb* db, OxbBatch* b, int sync, OxbStatus* st);
void oxbdb_flush(OxbDb* db, OxbStatus* st);
void oxbdb_compact_range(OxbDb* db, const char* b, size_t bl, int has_b, const char* e,
                         size_t el, int has_e, OxbStatus* st);
// *val malloc'd; returns 0 when the property is unknown.
int oxbdb_property(OxbDb* db, const char* name, char** val, size_t* vl);
void oxbdb_close(OxbDb* db, OxbStatus* st);  // frees db
OxbIter* oxbdb_iter_new(OxbDb* db);
void oxbdb_iter_seek(OxbIter* it, const char* k, size_t kl);
void oxbdb_iter_seek_to_first(OxbIter* it);
void oxbdb_iter_next(OxbIter* it);
int oxbdb_iter_valid(OxbIter* it);
void oxbdb_iter_key(OxbIter* it, const char** k, size_t* kl);
void oxbdb_iter_value(OxbIter* it, const char** v, size_t* vl);
void oxbdb_iter_status(OxbIter* it, OxbStatus* st);
void oxbdb_iter_free(OxbIter* it);
}
