// oxblob_db.cc — the small C API the Rust `Db` type uses: opens a RocksDB database through
// Env::CreateFromUri (the same object-registry path as db_bench --fs_uri) and wraps the
// handful of DB calls the Rust API offers. No C++ exception crosses into Rust.
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/convenience.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "oxblob_ffi.h"

struct OxbDb {
  std::shared_ptr<rocksdb::Env> guard;
  rocksdb::DB* db = nullptr;
};
struct OxbBatch {
  rocksdb::WriteBatch b;
};
struct OxbIter {
  std::unique_ptr<rocksdb::Iterator> it;
};

namespace {

char* Dup(const std::string& s) {
  char* p = static_cast<char*>(malloc(s.size() + 1));
  if (p) {
    memcpy(p, s.data(), s.size());
    p[s.size()] = '\0';
  }
  return p;
}

void Set(OxbStatus* st, const rocksdb::Status& s) {
  st->code = static_cast<int>(s.code());
  st->subcode = static_cast<int>(s.subcode());
  st->msg = s.ok() ? nullptr : Dup(s.ToString());
}

void SetException(OxbStatus* st, const char* what) {
  st->code = static_cast<int>(rocksdb::Status::kAborted);
  st->subcode = 0;
  st->msg = Dup(std::string("C++ exception: ") + what);
}

#define GUARD(st, ...)                    \
  try {                                   \
    __VA_ARGS__;                          \
  } catch (const std::exception& e) {     \
    SetException(st, e.what());           \
  } catch (...) {                         \
    SetException(st, "unknown");          \
  }

rocksdb::WriteOptions Wo(int sync) {
  rocksdb::WriteOptions w;
  w.sync = sync != 0;
  return w;
}

}  // namespace

extern "C" {

void oxbdb_free(void* p) { free(p); }

OxbDb* oxbdb_open(const char* fs_uri, const char* path, const OxbDbOptions* o, OxbStatus* st) {
  OxbDb* out = nullptr;
  GUARD(st, {
    auto d = std::make_unique<OxbDb>();
    rocksdb::Env* env = nullptr;
    rocksdb::ConfigOptions cfg;
    // Otherwise an unknown scheme is "OK" with no Env (db_bench 7.8 then crashes).
    cfg.ignore_unsupported_options = false;
    rocksdb::Status s = rocksdb::Env::CreateFromUri(cfg, "", fs_uri, &env, &d->guard);
    if (s.ok() && env == nullptr) {
      s = rocksdb::Status::NotSupported("no file system is registered for", fs_uri);
    }
    if (!s.ok()) {
      Set(st, s);
      return nullptr;
    }
    rocksdb::Options opts;
    opts.env = env;
    opts.create_if_missing = o->create_if_missing != 0;
    opts.error_if_exists = o->error_if_exists != 0;
    if (o->write_buffer_size) opts.write_buffer_size = o->write_buffer_size;
    if (o->target_file_size_base) opts.target_file_size_base = o->target_file_size_base;
    if (o->max_bytes_for_level_base) opts.max_bytes_for_level_base = o->max_bytes_for_level_base;
    opts.disable_auto_compactions = o->disable_auto_compactions != 0;
    opts.paranoid_checks = o->paranoid_checks != 0;
    s = rocksdb::DB::Open(opts, path, &d->db);
    Set(st, s);
    if (s.ok()) out = d.release();
  });
  return out;
}

void oxbdb_put(OxbDb* db, const char* k, size_t kl, const char* v, size_t vl, int sync,
               OxbStatus* st) {
  GUARD(st, Set(st, db->db->Put(Wo(sync), rocksdb::Slice(k, kl), rocksdb::Slice(v, vl))));
}

void oxbdb_delete(OxbDb* db, const char* k, size_t kl, int sync, OxbStatus* st) {
  GUARD(st, Set(st, db->db->Delete(Wo(sync), rocksdb::Slice(k, kl))));
}

void oxbdb_get(OxbDb* db, const char* k, size_t kl, char** val, size_t* vl, int* found,
               OxbStatus* st) {
  *val = nullptr;
  *vl = 0;
  *found = 0;
  GUARD(st, {
    std::string v;
    rocksdb::Status s = db->db->Get(rocksdb::ReadOptions(), rocksdb::Slice(k, kl), &v);
    if (s.IsNotFound()) {
      Set(st, rocksdb::Status::OK());
      return;
    }
    Set(st, s);
    if (!s.ok()) return;
    char* p = static_cast<char*>(malloc(v.size() ? v.size() : 1));
    if (!p) {
      Set(st, rocksdb::Status::MemoryLimit("get: out of memory"));
      return;
    }
    memcpy(p, v.data(), v.size());
    *val = p;
    *vl = v.size();
    *found = 1;
  });
}

OxbBatch* oxbdb_batch_new(void) {
  try {
    return new OxbBatch();
  } catch (...) {
    return nullptr;
  }
}
void oxbdb_batch_put(OxbBatch* b, const char* k, size_t kl, const char* v, size_t vl) {
  try {
    b->b.Put(rocksdb::Slice(k, kl), rocksdb::Slice(v, vl)).PermitUncheckedError();
  } catch (...) {
  }
}
void oxbdb_batch_delete(OxbBatch* b, const char* k, size_t kl) {
  try {
    b->b.Delete(rocksdb::Slice(k, kl)).PermitUncheckedError();
  } catch (...) {
  }
}
void oxbdb_batch_free(OxbBatch* b) { delete b; }

void oxbdb_write(OxbDb* db, OxbBatch* b, int sync, OxbStatus* st) {
  GUARD(st, Set(st, db->db->Write(Wo(sync), &b->b)));
}

void oxbdb_flush(OxbDb* db, OxbStatus* st) {
  GUARD(st, Set(st, db->db->Flush(rocksdb::FlushOptions())));
}

void oxbdb_compact_range(OxbDb* db, const char* b, size_t bl, int has_b, const char* e,
                         size_t el, int has_e, OxbStatus* st) {
  GUARD(st, {
    rocksdb::Slice bs(b, bl), es(e, el);
    rocksdb::CompactRangeOptions o;
    Set(st, db->db->CompactRange(o, has_b ? &bs : nullptr, has_e ? &es : nullptr));
  });
}

int oxbdb_property(OxbDb* db, const char* name, char** val, size_t* vl) {
  try {
    std::string v;
    if (!db->db->GetProperty(name, &v)) return 0;
    *val = Dup(v);
    *vl = v.size();
    return *val != nullptr;
  } catch (...) {
    return 0;
  }
}

void oxbdb_close(OxbDb* db, OxbStatus* st) {
  GUARD(st, {
    rocksdb::Status s = db->db->Close();
    delete db->db;
    db->db = nullptr;
    db->guard.reset();  // the last reference unmounts the image
    Set(st, s);
  });
  delete db;
}

OxbIter* oxbdb_iter_new(OxbDb* db) {
  try {
    auto* it = new OxbIter();
    it->it.reset(db->db->NewIterator(rocksdb::ReadOptions()));
    return it;
  } catch (...) {
    return nullptr;
  }
}
void oxbdb_iter_seek(OxbIter* it, const char* k, size_t kl) {
  try {
    it->it->Seek(rocksdb::Slice(k, kl));
  } catch (...) {
  }
}
void oxbdb_iter_seek_to_first(OxbIter* it) {
  try {
    it->it->SeekToFirst();
  } catch (...) {
  }
}
void oxbdb_iter_next(OxbIter* it) {
  try {
    it->it->Next();
  } catch (...) {
  }
}
int oxbdb_iter_valid(OxbIter* it) { return it->it->Valid() ? 1 : 0; }
void oxbdb_iter_key(OxbIter* it, const char** k, size_t* kl) {
  rocksdb::Slice s = it->it->key();
  *k = s.data();
  *kl = s.size();
}
void oxbdb_iter_value(OxbIter* it, const char** v, size_t* vl) {
  rocksdb::Slice s = it->it->value();
  *v = s.data();
  *vl = s.size();
}
void oxbdb_iter_status(OxbIter* it, OxbStatus* st) { GUARD(st, Set(st, it->it->status())); }
void oxbdb_iter_free(OxbIter* it) { delete it; }

}  // extern "C"
