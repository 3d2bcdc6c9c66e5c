/* Constants shared by the hv test guests (assembler only). */
#ifndef HV_GUEST_H
#define HV_GUEST_H

/* COM1, a 16550A. */
#define COM1_BASE 0x3f8
#define COM1_THR (COM1_BASE + 0)
#define COM1_LSR (COM1_BASE + 5)
#define COM1_SCR (COM1_BASE + 7)
#define LSR_THRE 0x20

/* Exit port: writing byte V powers the VM off with status V
 * (QEMU: -device isa-debug-exit,iobase=0xf4,iosize=1; QEMU's code = V*2+1). */
#define EXIT_PORT 0xf4

/* Exit statuses used by the common start-up code. */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_BAD_MAGIC 2
#define EXIT_EXCEPTION 3

/* Xen PVH boot ABI. */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578
#define HVM_START_CMDLINE 24 /* offset of cmdline_paddr (u64) */

/* GDT selectors (see start.S). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA (0x18 | 3)
#define SEL_UCODE (0x20 | 3)
#define SEL_TSS 0x28

/* RFLAGS for user mode: IOPL=3, reserved bit 1, IF=0. */
#define USER_RFLAGS 0x3002

#endif
