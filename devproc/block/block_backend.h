// The disk behind a block device (virtio-blk, AHCI): a raw image file or a host block device
// that the broker opened and handed over as an fd (a device process never opens
// paths). Reads and writes go straight between the disk and guest memory
// (iovecs that point into guest RAM: no copy), and run on a small pool of worker
// threads; finished requests are queued and signalled on an eventfd that the
// device's event loop polls, and their callbacks run on the loop thread when it
// calls DrainCompletions().
//
// What each operation does on the host:
//   read/write      preadv/pwritev (split at IOV_MAX, short transfers resumed)
//   flush           fdatasync
//   discard         file: fallocate(PUNCH_HOLE|KEEP_SIZE), so the host gets the
//                   space back; block device: ioctl BLKDISCARD. "Not supported"
//                   is success: a discard is only a hint.
//   write zeroes    file: fallocate(ZERO_RANGE), or PUNCH_HOLE when the caller
//                   allows unmapping; block device: BLKZEROOUT, or
//                   fallocate(PUNCH_HOLE) when unmapping is allowed. Where the
//                   host cannot do it, zeroes are written.
// With O_DIRECT (bhyve's `nocache`), a read or write the kernel refuses because
// guest buffers are not aligned is retried through an aligned bounce buffer.
//
// Thread safety: every public method except the synchronous Do*() operations
// is for the owning (event-loop) thread. The Do*() operations are what the
// workers run; they may be called from any thread.
#ifndef HV_DEVPROC_BLOCK_BLOCK_BACKEND_H_
#define HV_DEVPROC_BLOCK_BLOCK_BACKEND_H_

#include <sys/uio.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/fd.h"

namespace hv::block {

struct BlockBackendOptions {
  // Refuse writes even if the fd is writable. A read-only fd makes the backend
  // read-only whatever this says.
  bool read_only = false;
  // Logical block size the guest sees; 0 = the device's (block device) or 512
  // (file). Physical block size; 0 = the logical size, or the device's.
  uint32_t logical_block_size = 0;
  uint32_t physical_block_size = 0;
  // Worker threads executing requests.
  int num_workers = 2;
};

// One range of a discard or write-zeroes operation, in bytes.
struct ByteRange {
  uint64_t offset;
  uint64_t length;
  bool may_unmap = false;  // write zeroes: the range may be deallocated
};

// One asynchronous operation. For kRead/kWrite, `iov` points into guest memory
// and must stay valid until the callback has run.
struct BlockOp {
  enum class Kind { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };
  Kind kind = Kind::kFlush;
  uint64_t offset = 0;             // kRead, kWrite
  std::vector<struct iovec> iov;   // kRead, kWrite
  std::vector<ByteRange> ranges;   // kDiscard, kWriteZeroes
};

class BlockBackend {
 public:
  using Callback = std::function<void(absl::Status)>;
  // Called by a worker just before it executes an op (tests use it to hold
  // requests back and force out-of-order completion).
  using ExecuteHook = std::function<void(const BlockOp&)>;

  // Takes ownership of `fd` (a regular file or a block device). Errors name
  // what is wrong with the fd or the options.
  static absl::StatusOr<std::unique_ptr<BlockBackend>> Create(Fd fd,
                                                             const BlockBackendOptions& options);
  // Waits for the workers to finish queued operations; callbacks not yet
  // drained are dropped (destroy users such as BlkRequestEngine first: they
  // wait for their own requests).
  ~BlockBackend();
  BlockBackend(const BlockBackend&) = delete;
  BlockBackend& operator=(const BlockBackend&) = delete;

  // Disk size in bytes, rounded down to a whole number of logical blocks.
  uint64_t size() const { return size_; }
  bool read_only() const { return read_only_; }
  bool is_block_device() const { return is_block_device_; }
  bool direct_io() const { return direct_io_; }  // fd has O_DIRECT
  uint32_t logical_block_size() const { return logical_block_size_; }
  uint32_t physical_block_size() const { return physical_block_size_; }
  int fd() const { return fd_.get(); }

  // Readable (EPOLLIN/POLLIN) when completions are waiting for DrainCompletions.
  int event_fd() const { return event_fd_.get(); }

  // Queues `op`; `done` runs on the thread that calls DrainCompletions, with
  // the op's result. Writes to a read-only backend fail (in the callback).
  void Submit(BlockOp op, Callback done);
  // Runs the callbacks of finished operations, in the order they finished.
  // Never blocks. Returns how many ran.
  size_t DrainCompletions();
  // Blocks until a completion is waiting to be drained or nothing is pending.
  void WaitForCompletion();
  // Operations submitted whose callbacks have not run yet.
  size_t pending() const { return pending_; }

  // Set before the first Submit.
  void set_execute_hook(ExecuteHook hook) { execute_hook_ = std::move(hook); }

  // The synchronous operations. Offsets and lengths are in bytes; transfers
  // are complete or fail.
  absl::Status DoRead(uint64_t offset, const struct iovec* iov, size_t iovcnt);
  absl::Status DoWrite(uint64_t offset, const struct iovec* iov, size_t iovcnt);
  absl::Status DoFlush();
  absl::Status DoDiscard(uint64_t offset, uint64_t length);
  absl::Status DoWriteZeroes(uint64_t offset, uint64_t length, bool may_unmap);
  absl::Status Execute(const BlockOp& op);

 private:
  struct Job {
    BlockOp op;
    Callback done;
  };
  struct Done {
    Callback done;
    absl::Status status;
  };

  BlockBackend(Fd fd, Fd event_fd) : fd_(std::move(fd)), event_fd_(std::move(event_fd)) {}
  absl::Status Transfer(bool write, uint64_t offset, const struct iovec* iov, size_t iovcnt);
  absl::Status BounceTransfer(bool write, uint64_t offset, const struct iovec* iov,
                              size_t iovcnt);
  absl::Status WriteZeroBuffers(uint64_t offset, uint64_t length);
  void WorkerLoop();

  Fd fd_;
  Fd event_fd_;
  uint64_t size_ = 0;
  bool read_only_ = false;
  bool is_block_device_ = false;
  bool direct_io_ = false;
  uint32_t logical_block_size_ = 512;
  uint32_t physical_block_size_ = 512;
  ExecuteHook execute_hook_;
  size_t pending_ = 0;  // owner thread only

  std::mutex mu_;
  std::condition_variable work_cv_;  // jobs_ non-empty or stopping_
  std::condition_variable done_cv_;  // done_ non-empty
  std::deque<Job> jobs_;
  std::deque<Done> done_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace hv::block

#endif  // HV_DEVPROC_BLOCK_BLOCK_BACKEND_H_
