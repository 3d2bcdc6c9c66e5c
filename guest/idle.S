/*
 * idle.elf: a guest that stays up until it is told to go, for the control
 * commands' tests. It enables the ACPI power button (PM1_EN.PWRBTN_EN), prints
 * "idle: waiting for the power button\n", then loops: every byte received on
 * COM1 is echoed back, and when PM1_STS.PWRBTN_STS is set it prints
 * "idle: power button pressed\n", clears the status and enters S5 through
 * PM1_CNT (SLP_TYP=5, SLP_EN), as an ACPI OS would. The VM then ends with
 * "ACPI sleep state S5".
 *
 * Command line: count=N first prints "line 0\n" .. "line N-1\n" (console
 * output for the lpc restart test), default 0.
 */
#include "guest.h"

#define PM1_STS 0x400
#define PM1_EN 0x402
#define PM1_CNT 0x404
#define PWRBTN 0x100
#define S5_SLP_EN ((5 << 10) | (1 << 13))
#define COM1_RBR COM1_BASE
#define LSR_DR 0x01
#define POLLS_PER_PM1_CHECK 64
#define PAUSES_PER_POLL 2000

	.text
	.globl user_main
user_main:
	pushq %rbx
	pushq %r12
	leaq key_count(%rip), %rdi
	xorl %esi, %esi
	call cmdline_u64
	movq %rax, %r12                /* lines to print */
	xorl %ebx, %ebx
count:
	cmpq %r12, %rbx
	jae 1f
	leaq msg_line(%rip), %rdi
	call puts
	movq %rbx, %rdi
	call put_dec
	movl $'\n', %edi
	call putc
	incq %rbx
	jmp count
1:	movw $PM1_EN, %dx
	movw $PWRBTN, %ax
	outw %ax, %dx
	leaq msg_waiting(%rip), %rdi
	call puts
	xorl %ebx, %ebx                /* polls since the last PM1_STS check */
poll:
	movw $COM1_LSR, %dx
	inb %dx, %al
	testb $LSR_DR, %al
	jz 1f
	movw $COM1_RBR, %dx
	inb %dx, %al
	movzbl %al, %edi
	call putc
	jmp poll                       /* drain input before resting */
1:	movl $PAUSES_PER_POLL, %ecx
2:	pause
	decl %ecx
	jnz 2b
	incl %ebx
	cmpl $POLLS_PER_PM1_CHECK, %ebx
	jb poll
	xorl %ebx, %ebx
	movw $PM1_STS, %dx
	inw %dx, %ax
	testw $PWRBTN, %ax
	jz poll
	movw $PWRBTN, %ax              /* write-1-to-clear */
	outw %ax, %dx
	leaq msg_pressed(%rip), %rdi
	call puts
	movw $PM1_CNT, %dx
	movw $S5_SLP_EN, %ax
	outw %ax, %dx
	movl $EXIT_FAIL, %edi          /* S5 did not end the VM */
	call guest_exit

	.section .rodata
msg_waiting:	.asciz "idle: waiting for the power button\n"
msg_pressed:	.asciz "idle: power button pressed\n"
msg_line:	.asciz "line "
key_count:	.asciz "count"

	.section .note.GNU-stack, "", @progbits
