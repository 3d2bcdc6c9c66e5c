/* blkbench: the disk workloads of bench/blk.sh, run inside a guest (or on the
 * host for the ceiling). Static, no libraries: Linux AIO through raw system calls.
 *   blkbench DEVICE_OR_FILE [SECONDS_PER_TEST]
 * Prints one line: qd1_iops= qd32_iops= seqread_mbs= seqwrite_mbs=
 * All I/O is O_DIRECT so that the guest's page cache does not answer for the disk. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: blkbench DEVICE [SECONDS]\n");
    return 2;
  }
  double seconds = argc > 2 ? atof(argv[2]) : 3;
  int direct = 1;
  int fd = open(argv[1], O_RDWR | O_DIRECT);
  if (fd < 0) {
    /* tmpfs (before Linux 6.6) has no O_DIRECT: measure through the page cache. */
    direct = 0;
    fd = open(argv[1], O_RDWR);
  }
  if (fd < 0) die("open");
  uint64_t size = 0;
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) die("BLKGETSIZE64");
  } else {
    size = st.st_size;
  }
  uint64_t blocks4k = size / 4096;
  if (blocks4k < 1024) {
    fprintf(stderr, "blkbench: %s is too small\n", argv[1]);
    return 1;
  }
  char *buf;
  if (posix_memalign((void **)&buf, 4096, 32 * 4096 + (1 << 20))) die("posix_memalign");
  memset(buf, 0x5a, 32 * 4096 + (1 << 20));

  /* 4 KiB random reads, one at a time. */
  uint64_t n = 0;
  double start = now(), end = start + seconds;
  while (now() < end) {
    if (pread(fd, buf, 4096, (next_random() % blocks4k) * 4096) != 4096) die("pread");
    ++n;
  }
  double qd1 = n / (now() - start);

  /* 4 KiB random reads, 32 in flight (Linux AIO). */
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 32, &ctx) != 0) die("io_setup");
  struct iocb iocbs[32];
  struct iocb *list[32];
  struct io_event events[32];
  for (int i = 0; i < 32; ++i) {
    memset(&iocbs[i], 0, sizeof(iocbs[i]));
    iocbs[i].aio_fildes = fd;
    iocbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
    iocbs[i].aio_buf = (uint64_t)(uintptr_t)(buf + i * 4096);
    iocbs[i].aio_nbytes = 4096;
    iocbs[i].aio_offset = (next_random() % blocks4k) * 4096;
    iocbs[i].aio_data = i;
    list[i] = &iocbs[i];
  }
  if (syscall(SYS_io_submit, ctx, 32, list) != 32) die("io_submit");
  n = 0;
  start = now();
  end = start + seconds;
  for (;;) {
    long got = syscall(SYS_io_getevents, ctx, 1, 32, events, NULL);
    if (got < 0) die("io_getevents");
    int resubmit = 0;
    for (long i = 0; i < got; ++i) {
      if (events[i].res != 4096) {
        fprintf(stderr, "blkbench: aio read returned %lld\n", (long long)events[i].res);
        return 1;
      }
      ++n;
      struct iocb *cb = &iocbs[events[i].data];
      cb->aio_offset = (next_random() % blocks4k) * 4096;
      list[resubmit++] = cb;
    }
    if (now() >= end) break;
    if (syscall(SYS_io_submit, ctx, resubmit, list) != resubmit) die("io_submit");
  }
  double qd32 = n / (now() - start);
  syscall(SYS_io_destroy, ctx);

  /* 1 MiB sequential reads, then writes, wrapping at the end of the disk. */
  char *big = buf + 32 * 4096;
  uint64_t chunks = size >> 20, bytes = 0, at = 0;
  start = now();
  end = start + seconds;
  while (now() < end) {
    if (pread(fd, big, 1 << 20, (at++ % chunks) << 20) != (1 << 20)) die("pread 1M");
    bytes += 1 << 20;
  }
  double seqread = bytes / (now() - start) / 1e6;
  bytes = 0;
  at = 0;
  start = now();
  end = start + seconds;
  while (now() < end) {
    if (pwrite(fd, big, 1 << 20, (at++ % chunks) << 20) != (1 << 20)) die("pwrite 1M");
    bytes += 1 << 20;
  }
  if (fdatasync(fd) != 0) die("fdatasync");
  double seqwrite = bytes / (now() - start) / 1e6;
  printf("blkbench qd1_iops=%.0f qd32_iops=%.0f seqread_mbs=%.1f seqwrite_mbs=%.1f direct=%d\n",
         qd1, qd32, seqread, seqwrite, direct);
  return 0;
}
