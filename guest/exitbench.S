/*
 * exitbench.elf: times VM exits from CPL3 with the TSC.
 *
 * Command line (hvm_start_info cmdline, blank-separated words):
 *   n=<count>      accesses per phase (decimal or 0x hex), default 1000000
 *   mmio=<addr>    guest-physical address for the mmio-read phase (32-bit
 *                  loads; must be below 4 GiB); the phase is skipped without it
 *   floor=<port>   port for the pio-floor phase, default 0x5e0 (unclaimed)
 *   bar=<cf8>      with mmio=: first place a PCI BAR at mmio= and turn on memory
 *                  decoding (no firmware does it for this guest). <cf8> is the
 *                  CONFIG_ADDRESS of the BAR register, e.g. 0x80001810 for
 *                  BAR0 of 0:3.0; the BAR's upper half (next register) gets 0.
 *
 * Output, one line per phase, then exit status 0:
 *   exitbench n=<n> floor=<port> mmio=<addr|none>
 *   pio-read cycles=<tsc cycles> n=<n>     inb from 0x3ff (COM1 scratch)
 *   pio-read-lsr cycles=<tsc cycles> n=<n> inb from 0x3fd (COM1 LSR)
 *   pio-write cycles=<tsc cycles> n=<n>    outb to 0x3ff
 *   pio-floor cycles=<tsc cycles> n=<n>    inb from the unclaimed port
 *   mmio-read cycles=<tsc cycles> n=<n>    movl from mmio=
 */
#include "guest.h"

#define DEFAULT_N 1000000
#define DEFAULT_FLOOR_PORT 0x5e0

/* %rax = TSC (clobbers %rdx). */
.macro TSC
	lfence
	rdtsc
	shlq $32, %rdx
	orq %rdx, %rax
	lfence
.endm

	.text
	.globl user_main
user_main:
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15

	leaq key_n(%rip), %rdi
	movl $DEFAULT_N, %esi
	call cmdline_u64
	movq %rax, n(%rip)
	leaq key_floor(%rip), %rdi
	movl $DEFAULT_FLOOR_PORT, %esi
	call cmdline_u64
	movq %rax, %r13                /* floor port */
	leaq key_mmio(%rip), %rdi
	call cmdline_find
	movq %rax, %r14                /* 0: no mmio phase */
	testq %rax, %rax
	jz 1f
	movq %rax, %rdi
	call parse_u64
	movq %rax, %r14
	movq $0xfffffffc, %rcx         /* mapped: 0 < addr <= 4 GiB - 4 */
	cmpq %rcx, %r14
	ja bad_mmio
	testq %r14, %r14
	jz bad_mmio
	leaq key_bar(%rip), %rdi
	xorl %esi, %esi
	call cmdline_u64
	testq %rax, %rax
	jz 1f
	movq %rax, %rdi
	movq %r14, %rsi
	call place_bar
1:
	/* header */
	leaq msg_head(%rip), %rdi
	call puts
	movq n(%rip), %rdi
	call put_dec
	leaq msg_floor(%rip), %rdi
	call puts
	movq %r13, %rdi
	call put_hex
	leaq msg_mmio(%rip), %rdi
	call puts
	testq %r14, %r14
	jz 2f
	movq %r14, %rdi
	call put_hex
	jmp 3f
2:	leaq msg_none(%rip), %rdi
	call puts
3:	movl $'\n', %edi
	call putc

	/* pio-read: inb from the COM1 scratch register */
	TSC
	movq %rax, %r15
	movq n(%rip), %rcx
	movl $COM1_SCR, %edx
	testq %rcx, %rcx
	jz 2f
1:	inb %dx, %al
	decq %rcx
	jnz 1b
2:	TSC
	subq %r15, %rax
	leaq name_pio_read(%rip), %rdi
	movq %rax, %rsi
	call report

	/* pio-read-lsr: inb from COM1's line status register, which a VMM may
	 * answer without asking the UART (hv: a published register) */
	TSC
	movq %rax, %r15
	movq n(%rip), %rcx
	movl $COM1_SCR - 2, %edx
	testq %rcx, %rcx
	jz 2f
1:	inb %dx, %al
	decq %rcx
	jnz 1b
2:	TSC
	subq %r15, %rax
	leaq name_pio_read_lsr(%rip), %rdi
	movq %rax, %rsi
	call report

	/* pio-write: outb to the COM1 scratch register */
	TSC
	movq %rax, %r15
	movq n(%rip), %rcx
	movl $COM1_SCR, %edx
	xorl %eax, %eax
	testq %rcx, %rcx
	jz 2f
1:	outb %al, %dx
	decq %rcx
	jnz 1b
2:	TSC
	subq %r15, %rax
	leaq name_pio_write(%rip), %rdi
	movq %rax, %rsi
	call report

	/* pio-floor: inb from an unclaimed port */
	TSC
	movq %rax, %r15
	movq n(%rip), %rcx
	movl %r13d, %edx
	testq %rcx, %rcx
	jz 2f
1:	inb %dx, %al
	decq %rcx
	jnz 1b
2:	TSC
	subq %r15, %rax
	leaq name_pio_floor(%rip), %rdi
	movq %rax, %rsi
	call report

	/* mmio-read: 32-bit loads from mmio= (mapped uncacheable above 3 GiB) */
	testq %r14, %r14
	jz 3f
	TSC
	movq %rax, %r15
	movq n(%rip), %rcx
	testq %rcx, %rcx
	jz 2f
1:	movl (%r14), %eax
	decq %rcx
	jnz 1b
2:	TSC
	subq %r15, %rax
	leaq name_mmio_read(%rip), %rdi
	movq %rax, %rsi
	call report
3:
	xorl %eax, %eax
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	ret

bad_mmio:
	leaq msg_bad_mmio(%rip), %rdi
	call puts
	movl $EXIT_FAIL, %edi
	call guest_exit

/* place_bar(cf8, addr): BAR register at CONFIG_ADDRESS cf8 := addr, the next
 * register := 0, then the function's command register gets memory decoding. */
place_bar:
	movl %edi, %eax
	movl $0xcf8, %edx
	outl %eax, %dx
	movl %esi, %eax
	movl $0xcfc, %edx
	outl %eax, %dx
	leal 4(%rdi), %eax
	movl $0xcf8, %edx
	outl %eax, %dx
	xorl %eax, %eax
	movl $0xcfc, %edx
	outl %eax, %dx
	movl %edi, %eax
	andl $0xffffff00, %eax
	orl $0x04, %eax
	movl $0xcf8, %edx
	outl %eax, %dx
	movl $0xcfc, %edx
	inw %dx, %ax
	orw $0x2, %ax
	outw %ax, %dx
	ret

/* report(name, cycles): "<name> cycles=<cycles> n=<n>\n" */
report:
	pushq %rbx
	movq %rsi, %rbx
	call puts
	leaq msg_cycles(%rip), %rdi
	call puts
	movq %rbx, %rdi
	call put_dec
	leaq msg_n(%rip), %rdi
	call puts
	movq n(%rip), %rdi
	call put_dec
	movl $'\n', %edi
	call putc
	popq %rbx
	ret

	.section .rodata
key_n:		.asciz "n"
key_floor:	.asciz "floor"
key_mmio:	.asciz "mmio"
key_bar:	.asciz "bar"
msg_head:	.asciz "exitbench n="
msg_floor:	.asciz " floor="
msg_mmio:	.asciz " mmio="
msg_none:	.asciz "none"
msg_cycles:	.asciz " cycles="
msg_n:		.asciz " n="
msg_bad_mmio:	.asciz "exitbench: mmio= must be a nonzero address below 4 GiB\n"
name_pio_read:	.asciz "pio-read"
name_pio_write:	.asciz "pio-write"
name_pio_read_lsr:	.asciz "pio-read-lsr"
name_pio_floor:	.asciz "pio-floor"
name_mmio_read:	.asciz "mmio-read"

	.data
	.balign 8
n:	.quad 0

	.section .note.GNU-stack, "", @progbits
