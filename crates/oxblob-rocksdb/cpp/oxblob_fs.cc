// oxblob_fs.cc — a rocksdb::FileSystem on blobfs, registered as the "oxblob://" URI scheme.
//
// Thin by design: every operation calls into Rust through the C ABI in oxblob_ffi.h (the
// Rust side owns the mount, the files, the lock table and the write buffering). This file
// maps calls and errors, and registers the factory from a static initializer, so that a
// process that loads the library (LD_PRELOAD=liboxblob_rocksdb.so db_bench --fs_uri=...)
// finds the scheme in ObjectLibrary::Default().
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/io_status.h>
#include <rocksdb/utilities/object_registry.h>

#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "oxblob_ffi.h"

namespace {

using rocksdb::FileLock;
using rocksdb::FileOptions;
using rocksdb::FileSystem;
using rocksdb::FSDirectory;
using rocksdb::FSRandomAccessFile;
using rocksdb::FSRandomRWFile;
using rocksdb::FSSequentialFile;
using rocksdb::FSWritableFile;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Logger;
using rocksdb::Slice;

// Takes ownership of a Rust-allocated message.
std::string TakeMsg(char* err) {
  std::string s = err ? err : "unknown error";
  if (err) oxb_free_string(err);
  return s;
}

// errno + message -> IOStatus. `missing_is_notfound`: ENOENT as NotFound (queries such as
// FileExists, GetFileSize, GetChildren) rather than IOError/PathNotFound (opens, deletes),
// which is what RocksDB's own posix file system returns in each case.
// `errp` points to the message pointer the call filled in: it is read here, after the call
// returned (an argument `err` would be copied before or after the call, the order in which
// C++ evaluates arguments being unspecified, and the message lost).
IOStatus ToStatus(int rc, char** errp, bool missing_is_notfound = false) {
  std::string msg = TakeMsg(*errp);
  *errp = nullptr;
  switch (rc) {
    case 0:
      return IOStatus::OK();
    case ENOENT:
    case ENOTDIR:
      return missing_is_notfound ? IOStatus::NotFound("oxblob", msg)
                                 : IOStatus::PathNotFound("oxblob", msg);
    case ENOSPC:
      return IOStatus::NoSpace("oxblob", msg);
    case EBUSY:
      return IOStatus::IOError("oxblob: lock held", msg);
    default:
      return IOStatus::IOError("oxblob (" + std::string(strerror(rc)) + ")", msg);
  }
}

// RocksDB paths -> blobfs paths: absolute, no repeated or trailing slashes.
std::string Norm(const std::string& p) {
  std::string out = "/";
  size_t i = 0;
  while (i < p.size()) {
    while (i < p.size() && p[i] == '/') i++;
    size_t j = i;
    while (j < p.size() && p[j] != '/') j++;
    if (j > i) {
      std::string c = p.substr(i, j - i);
      if (c == ".") {
      } else if (c == "..") {
        size_t k = out.find_last_of('/', out.size() > 1 ? out.size() - 1 : 0);
        out.resize(k == 0 ? 1 : k);
        if (out.empty()) out = "/";
      } else {
        if (out.size() > 1) out += '/';
        out += c;
      }
    }
    i = j;
  }
  return out;
}

// The mount, shared by the FileSystem and every file it opened: the mount is released only
// after the last of them is gone, so no open file outlives it.
struct MountHolder {
  OxbMount* m;
  explicit MountHolder(OxbMount* mount) : m(mount) {}
  ~MountHolder() {
    char* err = nullptr;
    if (oxb_release(m, &err) != 0) {
      fprintf(stderr, "oxblob: unmount failed: %s\n", TakeMsg(err).c_str());
    }
  }
};
using Holder = std::shared_ptr<MountHolder>;

// One open Rust file; closed in the destructor if still open.
class FileRef {
 public:
  FileRef(Holder h, OxbFile* f) : h_(std::move(h)), f_(f) {}
  ~FileRef() { Close(); }
  IOStatus Close() {
    if (!f_) return IOStatus::OK();
    char* err = nullptr;
    int rc = oxb_file_close(f_, &err);
    f_ = nullptr;
    return ToStatus(rc, &err);
  }
  IOStatus Read(uint64_t off, size_t n, Slice* result, char* scratch) const {
    if (!f_) return IOStatus::IOError("oxblob: read on a closed file");
    size_t got = 0;
    char* err = nullptr;
    int rc = oxb_file_read(f_, off, scratch, n, &got, &err);
    if (rc != 0) return ToStatus(rc, &err);
    *result = Slice(scratch, got);
    return IOStatus::OK();
  }
  OxbFile* get() const { return f_; }

 private:
  Holder h_;
  OxbFile* f_;
};

IOStatus Closed() { return IOStatus::IOError("oxblob: file is closed"); }

// Direct reads (`align` non-zero: FileOptions::use_direct_reads on a mount without a data
// cache): RocksDB then reads aligned ranges into aligned buffers, and blobfs reads them
// from the device straight into those buffers, with no copy on either side.
class OxSequentialFile : public FSSequentialFile {
 public:
  OxSequentialFile(Holder h, OxbFile* f, size_t align) : f_(std::move(h), f), align_(align) {}
  bool use_direct_io() const override { return align_ != 0; }
  size_t GetRequiredBufferAlignment() const override {
    return align_ != 0 ? align_ : FSSequentialFile::GetRequiredBufferAlignment();
  }
  IOStatus Read(size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) override {
    IOStatus s = f_.Read(pos_, n, result, scratch);
    if (s.ok()) pos_ += result->size();
    return s;
  }
  IOStatus PositionedRead(uint64_t offset, size_t n, const IOOptions&, Slice* result,
                          char* scratch, IODebugContext*) override {
    return f_.Read(offset, n, result, scratch);
  }
  IOStatus Skip(uint64_t n) override {
    uint64_t size = f_.get() ? oxb_file_size(f_.get()) : 0;
    pos_ = pos_ + n > size ? size : pos_ + n;
    return IOStatus::OK();
  }

 private:
  FileRef f_;
  size_t align_;
  uint64_t pos_ = 0;
};

class OxRandomAccessFile : public FSRandomAccessFile {
 public:
  OxRandomAccessFile(Holder h, OxbFile* f, size_t align) : f_(std::move(h), f), align_(align) {}
  bool use_direct_io() const override { return align_ != 0; }
  size_t GetRequiredBufferAlignment() const override {
    return align_ != 0 ? align_ : FSRandomAccessFile::GetRequiredBufferAlignment();
  }
  IOStatus Read(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) const override {
    return f_.Read(offset, n, result, scratch);
  }
  // RocksDB's hint for a range it is about to read (table tails, iterator and compaction
  // readahead): blobfs reads it into its cache if there is room, so the reads that follow
  // are hits. With the blobfs cache off the answer is NotSupported, the contract's way of
  // telling RocksDB to read ahead into its own prefetch buffer; an OK there would make it
  // issue one small device read per block.
  IOStatus Prefetch(uint64_t offset, size_t n, const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    int rc = oxb_file_readahead(f_.get(), offset, n, &err);
    if (rc == EOPNOTSUPP) {
      std::string msg = TakeMsg(err);
      return IOStatus::NotSupported("oxblob", msg);
    }
    return ToStatus(rc, &err);
  }

 private:
  FileRef f_;
  size_t align_;
};

class OxWritableFile : public FSWritableFile {
 public:
  OxWritableFile(Holder h, OxbFile* f, const FileOptions& o)
      : FSWritableFile(o), f_(std::move(h), f) {}
  ~OxWritableFile() override { f_.Close(); }
  using FSWritableFile::Append;
  using FSWritableFile::PositionedAppend;
  IOStatus Append(const Slice& data, const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_append(f_.get(), data.data(), data.size(), &err), &err);
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions&,
                            IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_write_at(f_.get(), offset, data.data(), data.size(), &err), &err);
  }
  IOStatus Truncate(uint64_t size, const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_truncate(f_.get(), size, &err), &err);
  }
  IOStatus Close(const IOOptions&, IODebugContext*) override { return f_.Close(); }
  // Appends are buffered once (blobfs's write-behind, or with cache=0 the Rust-side buffer):
  // RocksDB calls Flush after every WAL record, and only Sync/Fsync promise durability.
  IOStatus Flush(const IOOptions&, IODebugContext*) override {
    return f_.get() ? IOStatus::OK() : Closed();
  }
  // Sync is one blobfs fdatasync (data and size), Fsync one blobfs fsync (times too).
  IOStatus Sync(const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_datasync(f_.get(), &err), &err);
  }
  IOStatus Fsync(const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_sync(f_.get(), &err), &err);
  }
  bool IsSyncThreadSafe() const override { return true; }
  // Writes the buffer out to blobfs (background write-back, not a durability point).
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_flush(f_.get(), &err), &err);
  }
  // blobfs allocates clusters on write (thin); nothing to reserve ahead.
  IOStatus Allocate(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override {
    return IOStatus::OK();
  }
  uint64_t GetFileSize(const IOOptions&, IODebugContext*) override {
    return f_.get() ? oxb_file_size(f_.get()) : 0;
  }

 private:
  FileRef f_;
};

class OxRandomRWFile : public FSRandomRWFile {
 public:
  OxRandomRWFile(Holder h, OxbFile* f) : f_(std::move(h), f) {}
  IOStatus Write(uint64_t offset, const Slice& data, const IOOptions&,
                 IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_write_at(f_.get(), offset, data.data(), data.size(), &err), &err);
  }
  IOStatus Read(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) const override {
    return f_.Read(offset, n, result, scratch);
  }
  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Sync(const IOOptions&, IODebugContext*) override {
    if (!f_.get()) return Closed();
    char* err = nullptr;
    return ToStatus(oxb_file_sync(f_.get(), &err), &err);
  }
  IOStatus Close(const IOOptions&, IODebugContext*) override { return f_.Close(); }

 private:
  FileRef f_;
};

// blobfs commits namespace operations (create, rename, unlink, mkdir) deferred: they are
// durable only after a flush. RocksDB fsyncs the directory after renaming CURRENT and after
// creating files, and that is such a flush (one device flush covers every directory).
class OxDirectory : public FSDirectory {
 public:
  OxDirectory(Holder h, std::string path) : h_(std::move(h)), path_(std::move(path)) {}
  IOStatus Fsync(const IOOptions&, IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_fsync_dir(h_->m, path_.c_str(), &err), &err);
  }
  IOStatus FsyncWithDirOptions(const IOOptions& o, IODebugContext* d,
                               const rocksdb::DirFsyncOptions&) override {
    return Fsync(o, d);
  }
  IOStatus Close(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

 private:
  Holder h_;
  std::string path_;
};

// The info log (LOG) as a file in the image, formatted like RocksDB's posix logger.
class OxLogger : public Logger {
 public:
  OxLogger(Holder h, OxbFile* f, rocksdb::InfoLogLevel level)
      : Logger(level), f_(std::move(h), f) {}
  ~OxLogger() override {
    if (!closed_) CloseImpl().PermitUncheckedError();
  }
  using Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char buf[1024];
    struct timeval now;
    gettimeofday(&now, nullptr);
    struct tm t;
    time_t secs = now.tv_sec;
    localtime_r(&secs, &t);
    int p = snprintf(buf, sizeof(buf), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %llx ",
                     t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                     t.tm_sec, static_cast<long>(now.tv_usec),
                     static_cast<unsigned long long>(gettid()));
    std::string line(buf, p > 0 ? static_cast<size_t>(p) : 0);
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    if (n > 0) {
      std::string body(static_cast<size_t>(n) + 1, '\0');
      vsnprintf(&body[0], body.size(), format, ap);
      body.resize(static_cast<size_t>(n));
      line += body;
    }
    if (line.empty() || line.back() != '\n') line += '\n';
    std::lock_guard<std::mutex> g(mu_);
    if (!f_.get()) return;
    char* err = nullptr;
    if (oxb_file_append(f_.get(), line.data(), line.size(), &err) != 0) TakeMsg(err);
  }
  void Flush() override {
    std::lock_guard<std::mutex> g(mu_);
    if (!f_.get()) return;
    char* err = nullptr;
    if (oxb_file_flush(f_.get(), &err) != 0) TakeMsg(err);
  }

 protected:
  rocksdb::Status CloseImpl() override {
    std::lock_guard<std::mutex> g(mu_);
    return f_.Close();
  }

 private:
  std::mutex mu_;
  FileRef f_;
};

class OxLock : public FileLock {
 public:
  explicit OxLock(std::string path) : path(std::move(path)) {}
  std::string path;
};

class OxFileSystem : public FileSystem {
 public:
  OxFileSystem(OxbMount* m, std::string uri)
      : h_(std::make_shared<MountHolder>(m)), uri_(std::move(uri)) {}

  static const char* kClassName() { return "OxblobFileSystem"; }
  const char* Name() const override { return kClassName(); }

  IOStatus NewSequentialFile(const std::string& fname, const FileOptions& o,
                             std::unique_ptr<FSSequentialFile>* result,
                             IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_READ, &f);
    if (s.ok()) result->reset(new OxSequentialFile(h_, f, DirectAlign(o)));
    return s;
  }
  IOStatus NewRandomAccessFile(const std::string& fname, const FileOptions& o,
                               std::unique_ptr<FSRandomAccessFile>* result,
                               IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_READ, &f);
    if (s.ok()) result->reset(new OxRandomAccessFile(h_, f, DirectAlign(o)));
    return s;
  }
  IOStatus NewWritableFile(const std::string& fname, const FileOptions& o,
                           std::unique_ptr<FSWritableFile>* result,
                           IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_TRUNCATE, &f);
    if (s.ok()) result->reset(new OxWritableFile(h_, f, o));
    return s;
  }
  IOStatus ReopenWritableFile(const std::string& fname, const FileOptions& o,
                              std::unique_ptr<FSWritableFile>* result,
                              IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_APPEND, &f);
    if (s.ok()) result->reset(new OxWritableFile(h_, f, o));
    return s;
  }
  // Renames the old file into place and starts it empty (the recycled log starts afresh).
  IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                             const FileOptions& o, std::unique_ptr<FSWritableFile>* result,
                             IODebugContext* dbg) override {
    IOStatus s = RenameFile(old_fname, fname, IOOptions(), dbg);
    if (!s.ok()) return s;
    return NewWritableFile(fname, o, result, dbg);
  }
  IOStatus NewRandomRWFile(const std::string& fname, const FileOptions&,
                           std::unique_ptr<FSRandomRWFile>* result,
                           IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_APPEND, &f);
    if (s.ok()) result->reset(new OxRandomRWFile(h_, f));
    return s;
  }
  IOStatus NewDirectory(const std::string& name, const IOOptions& o,
                        std::unique_ptr<FSDirectory>* result, IODebugContext* d) override {
    bool is_dir = false;
    IOStatus s = IsDirectory(name, o, &is_dir, d);
    if (!s.ok()) return s;
    if (!is_dir) return IOStatus::IOError("oxblob: not a directory", name);
    result->reset(new OxDirectory(h_, Norm(name)));
    return IOStatus::OK();
  }
  IOStatus FileExists(const std::string& fname, const IOOptions&, IODebugContext*) override {
    uint64_t size, mtime;
    int dir;
    char* err = nullptr;
    return ToStatus(oxb_stat(h_->m, Norm(fname).c_str(), &size, &mtime, &dir, &err), &err,
                    true);
  }
  IOStatus GetChildren(const std::string& dir, const IOOptions&,
                       std::vector<std::string>* result, IODebugContext*) override {
    result->clear();
    char* names = nullptr;
    size_t len = 0;
    char* err = nullptr;
    int rc = oxb_readdir(h_->m, Norm(dir).c_str(), &names, &len, &err);
    if (rc != 0) return ToStatus(rc, &err, true);
    size_t i = 0;
    while (i < len) {
      size_t n = strnlen(names + i, len - i);
      result->emplace_back(names + i, n);
      i += n + 1;
    }
    oxb_free_buf(names, len);
    return IOStatus::OK();
  }
  IOStatus GetChildrenFileAttributes(const std::string& dir, const IOOptions& o,
                                     std::vector<rocksdb::Env::FileAttributes>* result,
                                     IODebugContext* d) override {
    std::vector<std::string> names;
    IOStatus s = GetChildren(dir, o, &names, d);
    if (!s.ok()) return s;
    result->clear();
    std::string base = Norm(dir);
    if (base.size() > 1) base += '/';
    for (const auto& n : names) {
      uint64_t size = 0, mtime;
      int is_dir;
      char* err = nullptr;
      int rc = oxb_stat(h_->m, (base + n).c_str(), &size, &mtime, &is_dir, &err);
      if (rc == ENOENT) {  // deleted meanwhile
        TakeMsg(err);
        continue;
      }
      if (rc != 0) return ToStatus(rc, &err, true);
      result->push_back({n, size});
    }
    return IOStatus::OK();
  }
  IOStatus DeleteFile(const std::string& fname, const IOOptions&, IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_unlink(h_->m, Norm(fname).c_str(), &err), &err);
  }
  IOStatus Truncate(const std::string& fname, size_t size, const IOOptions&,
                    IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_truncate_path(h_->m, Norm(fname).c_str(), size, &err), &err);
  }
  IOStatus CreateDir(const std::string& dirname, const IOOptions&, IODebugContext*) override {
    char* err = nullptr;
    int rc = oxb_mkdir(h_->m, Norm(dirname).c_str(), &err);
    if (rc == EEXIST) return IOStatus::IOError("oxblob: exists", TakeMsg(err));
    return ToStatus(rc, &err);
  }
  // Creates missing parents too (the image starts with only "/", and db_bench's default
  // --db is under /tmp).
  IOStatus CreateDirIfMissing(const std::string& dirname, const IOOptions& o,
                              IODebugContext* d) override {
    std::string p = Norm(dirname);
    size_t at = 1;
    while (at <= p.size()) {
      size_t next = p.find('/', at);
      if (next == std::string::npos) next = p.size();
      std::string prefix = p.substr(0, next);
      char* err = nullptr;
      int rc = oxb_mkdir(h_->m, prefix.c_str(), &err);
      if (rc == EEXIST) {
        TakeMsg(err);
        bool is_dir = false;
        IOStatus s = IsDirectory(prefix, o, &is_dir, d);
        if (!s.ok()) return s;
        if (!is_dir) return IOStatus::IOError("oxblob: exists and is not a directory", prefix);
      } else if (rc != 0) {
        return ToStatus(rc, &err);
      }
      at = next + 1;
    }
    return IOStatus::OK();
  }
  IOStatus DeleteDir(const std::string& dirname, const IOOptions&, IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_rmdir(h_->m, Norm(dirname).c_str(), &err), &err);
  }
  IOStatus GetFileSize(const std::string& fname, const IOOptions&, uint64_t* file_size,
                       IODebugContext*) override {
    uint64_t mtime;
    int dir;
    char* err = nullptr;
    return ToStatus(oxb_stat(h_->m, Norm(fname).c_str(), file_size, &mtime, &dir, &err), &err,
                    true);
  }
  IOStatus GetFileModificationTime(const std::string& fname, const IOOptions&,
                                   uint64_t* file_mtime, IODebugContext*) override {
    uint64_t size, ns = 0;
    int dir;
    char* err = nullptr;
    IOStatus s =
        ToStatus(oxb_stat(h_->m, Norm(fname).c_str(), &size, &ns, &dir, &err), &err, true);
    if (s.ok()) *file_mtime = ns / 1000000000ULL;
    return s;
  }
  IOStatus RenameFile(const std::string& src, const std::string& target, const IOOptions&,
                      IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_rename(h_->m, Norm(src).c_str(), Norm(target).c_str(), &err), &err);
  }
  IOStatus LinkFile(const std::string&, const std::string&, const IOOptions&,
                    IODebugContext*) override {
    return IOStatus::NotSupported("oxblob: blobfs has no hard links");
  }
  IOStatus LockFile(const std::string& fname, const IOOptions&, FileLock** lock,
                    IODebugContext*) override {
    *lock = nullptr;
    std::string p = Norm(fname);
    char* err = nullptr;
    IOStatus s = ToStatus(oxb_lock(h_->m, p.c_str(), &err), &err);
    if (s.ok()) *lock = new OxLock(p);
    return s;
  }
  IOStatus UnlockFile(FileLock* lock, const IOOptions&, IODebugContext*) override {
    auto* l = static_cast<OxLock*>(lock);
    char* err = nullptr;
    IOStatus s = ToStatus(oxb_unlock(h_->m, l->path.c_str(), &err), &err);
    delete l;
    return s;
  }
  IOStatus GetTestDirectory(const IOOptions& o, std::string* path,
                            IODebugContext* d) override {
    *path = "/rocksdbtest";
    return CreateDirIfMissing(*path, o, d);
  }
  IOStatus NewLogger(const std::string& fname, const IOOptions&,
                     std::shared_ptr<Logger>* result, IODebugContext*) override {
    OxbFile* f = nullptr;
    IOStatus s = Open(fname, OXB_OPEN_TRUNCATE, &f);
    if (s.ok()) result->reset(new OxLogger(h_, f, rocksdb::InfoLogLevel::INFO_LEVEL));
    return s;
  }
  IOStatus GetAbsolutePath(const std::string& db_path, const IOOptions&,
                           std::string* output_path, IODebugContext*) override {
    *output_path = Norm(db_path);
    return IOStatus::OK();
  }
  IOStatus GetFreeSpace(const std::string&, const IOOptions&, uint64_t* diskfree,
                        IODebugContext*) override {
    char* err = nullptr;
    return ToStatus(oxb_free_space(h_->m, diskfree, &err), &err);
  }
  IOStatus IsDirectory(const std::string& path, const IOOptions&, bool* is_dir,
                       IODebugContext*) override {
    uint64_t size, mtime;
    int dir = 0;
    char* err = nullptr;
    IOStatus s = ToStatus(oxb_stat(h_->m, Norm(path).c_str(), &size, &mtime, &dir, &err), &err,
                          true);
    if (s.ok() && is_dir) *is_dir = dir != 0;
    return s;
  }

 private:
  // Direct reads when RocksDB asks for them and the mount has no data cache (see
  // OxSequentialFile); buffered (0) otherwise.
  size_t DirectAlign(const FileOptions& o) const {
    return o.use_direct_reads ? oxb_direct_align(h_->m) : 0;
  }
  IOStatus Open(const std::string& fname, int mode, OxbFile** f) {
    char* err = nullptr;
    return ToStatus(oxb_open(h_->m, Norm(fname).c_str(), mode, f, &err), &err);
  }

  Holder h_;
  std::string uri_;
};

// The factory receives the whole URI ("oxblob://..."); a bad URI, a missing or corrupt image
// or an image in use returns nullptr and the reason, which RocksDB reports as the status.
FileSystem* MakeOxblobFs(const std::string& uri, std::unique_ptr<FileSystem>* guard,
                         std::string* errmsg) {
  OxbMount* m = nullptr;
  char* err = nullptr;
  int rc = oxb_mount(uri.c_str(), &m, &err);
  if (rc != 0) {
    *errmsg = "oxblob: " + TakeMsg(err);
    return nullptr;
  }
  try {
    guard->reset(new OxFileSystem(m, uri));
  } catch (...) {
    *errmsg = "oxblob: out of memory";
    return nullptr;
  }
  return guard->get();
}

int RegisterOxblob() {
  // Matches "oxblob" and "oxblob:" followed by anything, not only well-formed
  // "oxblob://<device>": a malformed oxblob URI ("oxblob://", "oxblob:/x") then reaches the
  // factory and fails with the parser's reason. A URI no factory matches is RocksDB's to
  // report, and stock db_bench 7.8 crashes on one (it goes on with no Env).
  rocksdb::ObjectLibrary::Default()->AddFactory<FileSystem>(
      rocksdb::ObjectLibrary::PatternEntry("oxblob", true).AddSeparator(":", false),
      MakeOxblobFs);
  return 1;
}

}  // namespace

// The static registrar (kept by the +whole-archive link; see build.rs).
extern "C" {
__attribute__((used)) int oxblob_rocksdb_registered = RegisterOxblob();
}
