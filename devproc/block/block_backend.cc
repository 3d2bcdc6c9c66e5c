#include "devproc/block/block_backend.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hv::block {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// "Not supported here" errnos for fallocate and the block ioctls.
bool NotSupported(int err) { return err == EOPNOTSUPP || err == ENOTTY || err == ENOSYS; }

constexpr size_t kBounceChunk = 1 << 20;

struct FreeDeleter {
  void operator()(void* p) const { free(p); }
};

std::unique_ptr<uint8_t, FreeDeleter> AlignedBuffer(size_t size) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size) != 0) return nullptr;
  return std::unique_ptr<uint8_t, FreeDeleter>(static_cast<uint8_t*>(p));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlockBackend>> BlockBackend::Create(
    Fd fd, const BlockBackendOptions& options) {
  if (!fd.valid()) return absl::InvalidArgumentError("disk: no file descriptor");
  if (options.num_workers < 1 || options.num_workers > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("disk: worker count ", options.num_workers, " is not in [1, 64]"));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus("disk: fstat");
  bool is_block = S_ISBLK(st.st_mode);
  if (!is_block && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError("disk: fd is neither a regular file nor a block device");
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0) return ErrnoStatus("disk: fcntl(F_GETFL)");
  int accmode = flags & O_ACCMODE;
  if (accmode == O_WRONLY) return absl::InvalidArgumentError("disk: fd is open write-only");

  uint64_t size = 0;
  uint32_t dev_logical = 512, dev_physical = 512;
  if (is_block) {
    if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return ErrnoStatus("disk: BLKGETSIZE64");
    int lbs = 0;
    if (ioctl(fd.get(), BLKSSZGET, &lbs) == 0 && lbs >= 512) dev_logical = lbs;
    unsigned int pbs = 0;
    if (ioctl(fd.get(), BLKPBSZGET, &pbs) == 0 && pbs >= dev_logical) dev_physical = pbs;
  } else {
    size = st.st_size;
  }

  uint32_t logical = options.logical_block_size;
  if (logical == 0) logical = is_block ? dev_logical : 512;
  if (!IsPowerOfTwo(logical) || logical < 512) {
    return absl::InvalidArgumentError(
        absl::StrCat("disk: logical block size ", logical, " is not a power of two >= 512"));
  }
  uint32_t physical = options.physical_block_size;
  if (physical == 0) physical = is_block ? std::max(dev_physical, logical) : logical;
  if (!IsPowerOfTwo(physical) || physical < logical) {
    return absl::InvalidArgumentError(absl::StrCat("disk: physical block size ", physical,
                                                   " is not a power of two >= the logical ",
                                                   logical));
  }
  bool direct = (flags & O_DIRECT) != 0;
  if (direct && is_block && logical < dev_logical) {
    return absl::InvalidArgumentError(absl::StrCat(
        "disk: sector size ", logical, " is smaller than the device's ", dev_logical,
        " bytes, which O_DIRECT (nocache) cannot access"));
  }

  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus("disk: eventfd");
  std::unique_ptr<BlockBackend> b(new BlockBackend(std::move(fd), Fd(efd)));
  b->size_ = size - size % logical;
  b->read_only_ = options.read_only || accmode == O_RDONLY;
  b->is_block_device_ = is_block;
  b->direct_io_ = direct;
  b->logical_block_size_ = logical;
  b->physical_block_size_ = physical;
  for (int i = 0; i < options.num_workers; ++i) {
    b->workers_.emplace_back([p = b.get()] { p->WorkerLoop(); });
  }
  return b;
}

BlockBackend::~BlockBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void BlockBackend::Submit(BlockOp op, Callback done) {
  // A read or write with nothing else in flight runs here, on the device's
  // thread: at queue depth 1 the hand-off to a worker and back costs more than a
  // page-cache copy, and nothing waits behind it. The completion still arrives
  // through DrainCompletions, as for every request.
  bool run_here = pending_ == 0 && !execute_hook_ &&
                  (op.kind == BlockOp::Kind::kRead || op.kind == BlockOp::Kind::kWrite);
  ++pending_;
  if (run_here) {
    absl::Status status = Execute(op);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(Done{std::move(done), std::move(status)});
    }
    done_cv_.notify_all();
    SignalEventFd(event_fd_.get());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(Job{std::move(op), std::move(done)});
  }
  work_cv_.notify_one();
}

void BlockBackend::WorkerLoop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      // Queued work is finished even when stopping: a write the guest was
      // promised must not be dropped half-way through the queue.
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    if (execute_hook_) execute_hook_(job.op);
    absl::Status status = Execute(job.op);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(Done{std::move(job.done), std::move(status)});
    }
    done_cv_.notify_all();
    SignalEventFd(event_fd_.get());
  }
}

size_t BlockBackend::DrainCompletions() {
  uint64_t count;
  // Consume the wake-up before taking the list: a completion queued after the
  // swap writes the eventfd again, so none is missed.
  ssize_t n = read(event_fd_.get(), &count, sizeof(count));
  (void)n;
  std::deque<Done> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done.swap(done_);
  }
  for (auto& d : done) {
    --pending_;
    d.done(std::move(d.status));
  }
  return done.size();
}

void BlockBackend::WaitForCompletion() {
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return !done_.empty() || pending_ == 0; });
}

absl::Status BlockBackend::Execute(const BlockOp& op) {
  switch (op.kind) {
    case BlockOp::Kind::kRead:
      return DoRead(op.offset, op.iov.data(), op.iov.size());
    case BlockOp::Kind::kWrite:
      return DoWrite(op.offset, op.iov.data(), op.iov.size());
    case BlockOp::Kind::kFlush:
      return DoFlush();
    case BlockOp::Kind::kDiscard:
      for (const auto& r : op.ranges) {
        if (auto s = DoDiscard(r.offset, r.length); !s.ok()) return s;
      }
      return absl::OkStatus();
    case BlockOp::Kind::kWriteZeroes:
      for (const auto& r : op.ranges) {
        if (auto s = DoWriteZeroes(r.offset, r.length, r.may_unmap); !s.ok()) return s;
      }
      return absl::OkStatus();
  }
  return absl::InternalError("disk: unknown operation");
}

absl::Status BlockBackend::DoRead(uint64_t offset, const struct iovec* iov, size_t iovcnt) {
  return Transfer(false, offset, iov, iovcnt);
}

absl::Status BlockBackend::DoWrite(uint64_t offset, const struct iovec* iov, size_t iovcnt) {
  if (read_only_) return absl::PermissionDeniedError("disk: write to a read-only disk");
  return Transfer(true, offset, iov, iovcnt);
}

absl::Status BlockBackend::Transfer(bool write, uint64_t offset, const struct iovec* iov,
                                    size_t iovcnt) {
  std::vector<struct iovec> v;
  v.reserve(iovcnt);
  for (size_t i = 0; i < iovcnt; ++i) {
    if (iov[i].iov_len != 0) v.push_back(iov[i]);
  }
  size_t first = 0;
  while (first < v.size()) {
    int cnt = static_cast<int>(std::min<size_t>(v.size() - first, IOV_MAX));
    ssize_t n = write ? pwritev(fd_.get(), &v[first], cnt, offset)
                      : preadv(fd_.get(), &v[first], cnt, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && direct_io_) {
        // O_DIRECT refused the guest's alignment: go through an aligned copy.
        return BounceTransfer(write, offset, &v[first], v.size() - first);
      }
      return ErrnoStatus(absl::StrFormat("disk: %s at %#x", write ? "pwritev" : "preadv", offset));
    }
    if (n == 0) {
      return absl::OutOfRangeError(
          absl::StrFormat("disk: %s at %#x reached the end of the disk",
                          write ? "pwritev" : "preadv", offset));
    }
    offset += n;
    size_t done = n;
    while (done > 0 && done >= v[first].iov_len) {
      done -= v[first].iov_len;
      ++first;
    }
    if (done > 0) {
      v[first].iov_base = static_cast<uint8_t*>(v[first].iov_base) + done;
      v[first].iov_len -= done;
    }
  }
  return absl::OkStatus();
}

absl::Status BlockBackend::BounceTransfer(bool write, uint64_t offset, const struct iovec* iov,
                                          size_t iovcnt) {
  auto buf = AlignedBuffer(kBounceChunk);
  if (!buf) return absl::ResourceExhaustedError("disk: no memory for a bounce buffer");
  size_t i = 0, in_iov = 0;  // position in the guest's iovecs
  while (i < iovcnt) {
    // Gather up to one chunk's worth of the request.
    size_t chunk = 0;
    size_t gi = i, gin = in_iov;
    while (gi < iovcnt && chunk < kBounceChunk) {
      size_t take = std::min(iov[gi].iov_len - gin, kBounceChunk - chunk);
      if (write) memcpy(buf.get() + chunk, static_cast<uint8_t*>(iov[gi].iov_base) + gin, take);
      chunk += take;
      gin += take;
      if (gin == iov[gi].iov_len) {
        ++gi;
        gin = 0;
      }
    }
    // The device needs whole logical blocks; the engine only sends those.
    size_t done = 0;
    while (done < chunk) {
      ssize_t n = write ? pwrite(fd_.get(), buf.get() + done, chunk - done, offset + done)
                        : pread(fd_.get(), buf.get() + done, chunk - done, offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return ErrnoStatus(absl::StrFormat("disk: %s at %#x (bounce)", write ? "pwrite" : "pread",
                                           offset + done));
      }
      if (n == 0) return absl::OutOfRangeError("disk: read reached the end of the disk");
      done += n;
    }
    if (!write) {
      size_t copied = 0;
      while (copied < chunk) {
        size_t take = std::min(iov[i].iov_len - in_iov, chunk - copied);
        memcpy(static_cast<uint8_t*>(iov[i].iov_base) + in_iov, buf.get() + copied, take);
        copied += take;
        in_iov += take;
        if (in_iov == iov[i].iov_len) {
          ++i;
          in_iov = 0;
        }
      }
    } else {
      i = gi;
      in_iov = gin;
    }
    offset += chunk;
  }
  return absl::OkStatus();
}

absl::Status BlockBackend::DoFlush() {
  while (fdatasync(fd_.get()) != 0) {
    if (errno != EINTR) return ErrnoStatus("disk: fdatasync");
  }
  return absl::OkStatus();
}

absl::Status BlockBackend::DoDiscard(uint64_t offset, uint64_t length) {
  if (read_only_) return absl::PermissionDeniedError("disk: discard on a read-only disk");
  if (length == 0) return absl::OkStatus();
  int rc;
  if (is_block_device_) {
    uint64_t range[2] = {offset, length};
    rc = ioctl(fd_.get(), BLKDISCARD, range);
  } else {
    rc = fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
  }
  if (rc != 0 && !NotSupported(errno)) {
    return ErrnoStatus(absl::StrFormat("disk: %s [%#x, +%#x)",
                                       is_block_device_ ? "BLKDISCARD" : "punch hole", offset,
                                       length));
  }
  return absl::OkStatus();  // a discard is a hint: "not supported" is fine
}

absl::Status BlockBackend::DoWriteZeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (read_only_) return absl::PermissionDeniedError("disk: write zeroes on a read-only disk");
  if (length == 0) return absl::OkStatus();
  // Deallocating and reading back zeroes: a hole in a file, or the block
  // layer's zero-out that may unmap (fallocate on a block device).
  if (may_unmap &&
      fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) {
    return absl::OkStatus();
  }
  int rc;
  const char* what;
  if (is_block_device_) {
    uint64_t range[2] = {offset, length};
    rc = ioctl(fd_.get(), BLKZEROOUT, range);
    what = "BLKZEROOUT";
  } else {
    rc = fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
    what = "zero range";
  }
  if (rc == 0) return absl::OkStatus();
  if (!NotSupported(errno)) {
    return ErrnoStatus(absl::StrFormat("disk: %s [%#x, +%#x)", what, offset, length));
  }
  return WriteZeroBuffers(offset, length);
}

absl::Status BlockBackend::WriteZeroBuffers(uint64_t offset, uint64_t length) {
  auto zeroes = AlignedBuffer(kBounceChunk);
  if (!zeroes) return absl::ResourceExhaustedError("disk: no memory for zeroes");
  memset(zeroes.get(), 0, kBounceChunk);
  while (length > 0) {
    size_t n = std::min<uint64_t>(length, kBounceChunk);
    struct iovec iov = {zeroes.get(), n};
    if (auto s = Transfer(true, offset, &iov, 1); !s.ok()) return s;
    offset += n;
    length -= n;
  }
  return absl::OkStatus();
}

}  // namespace hv::block
