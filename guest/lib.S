/*
 * Small runtime for the hv test guests: COM1 output, the exit port and the
 * kernel command line. Works at CPL0 and at CPL3 with IOPL=3.
 * Calling convention: System V (args %rdi, %rsi; result %rax; %rbx, %rbp,
 * %r12-%r15 preserved).
 */
#include "guest.h"

	.text

/* putc(c): wait for THR empty (bounded), then write c to COM1. */
	.globl putc
putc:
	movl $0x100000, %ecx
	movw $COM1_LSR, %dx
1:	inb %dx, %al
	testb $LSR_THRE, %al
	jnz 2f
	decl %ecx
	jnz 1b
2:	movl %edi, %eax
	movw $COM1_THR, %dx
	outb %al, %dx
	ret

/* puts(s): write a NUL-terminated string. */
	.globl puts
puts:
	pushq %rbx
	movq %rdi, %rbx
1:	movzbl (%rbx), %edi
	testl %edi, %edi
	jz 2f
	call putc
	incq %rbx
	jmp 1b
2:	popq %rbx
	ret

/* put_dec(v): write v (unsigned 64-bit) in decimal. */
	.globl put_dec
put_dec:
	pushq %rbx
	subq $32, %rsp
	leaq 32(%rsp), %rbx
	movb $0, -1(%rbx)
	decq %rbx
	movq %rdi, %rax
	movl $10, %ecx
1:	xorl %edx, %edx
	divq %rcx
	addb $'0', %dl
	decq %rbx
	movb %dl, (%rbx)
	testq %rax, %rax
	jnz 1b
	movq %rbx, %rdi
	call puts
	addq $32, %rsp
	popq %rbx
	ret

/* put_hex(v): write v as "0x" followed by lower-case hex digits (no padding). */
	.globl put_hex
put_hex:
	pushq %rbx
	subq $32, %rsp
	leaq 32(%rsp), %rbx
	movb $0, -1(%rbx)
	decq %rbx
	movq %rdi, %rax
1:	movl %eax, %edx
	andl $15, %edx
	leaq hexdigits(%rip), %rcx
	movb (%rcx, %rdx), %dl
	decq %rbx
	movb %dl, (%rbx)
	shrq $4, %rax
	jnz 1b
	decq %rbx
	movb $'x', (%rbx)
	decq %rbx
	movb $'0', (%rbx)
	movq %rbx, %rdi
	call puts
	addq $32, %rsp
	popq %rbx
	ret

/* guest_exit(status): write the status byte to the exit port; never returns. */
	.globl guest_exit
guest_exit:
	movl %edi, %eax
	outb %al, $EXIT_PORT
1:	pause
	jmp 1b

/*
 * cmdline_find(key): look for a "key=value" word in the kernel command line
 * (words separated by blanks). Returns a pointer to the value, or 0.
 */
	.globl cmdline_find
cmdline_find:
	movq cmdline(%rip), %rsi
	testq %rsi, %rsi
	jz 9f
1:	movb (%rsi), %al               /* skip blanks */
	testb %al, %al
	jz 9f
	cmpb $' ', %al
	ja 2f
	incq %rsi
	jmp 1b
2:	movq %rdi, %rcx                /* compare the word with key */
	movq %rsi, %rdx
3:	movb (%rcx), %al
	testb %al, %al
	jz 4f
	cmpb (%rdx), %al
	jne 5f
	incq %rcx
	incq %rdx
	jmp 3b
4:	cmpb $'=', (%rdx)
	jne 5f
	leaq 1(%rdx), %rax
	ret
5:	movb (%rsi), %al               /* skip the rest of the word */
	testb %al, %al
	jz 9f
	cmpb $' ', %al
	jbe 1b
	incq %rsi
	jmp 5b
9:	xorl %eax, %eax
	ret

/*
 * parse_u64(s): parse a decimal or 0x-prefixed hexadecimal number.
 * Returns the value in %rax and a pointer past the last digit in %rdx.
 */
	.globl parse_u64
parse_u64:
	xorl %eax, %eax
	movq %rdi, %rdx
	cmpb $'0', (%rdx)
	jne 3f
	movb 1(%rdx), %cl
	orb $0x20, %cl
	cmpb $'x', %cl
	jne 3f
	addq $2, %rdx
1:	movzbl (%rdx), %ecx            /* hexadecimal */
	subl $'0', %ecx
	cmpl $9, %ecx
	jbe 2f
	movzbl (%rdx), %ecx
	orl $0x20, %ecx
	subl $'a', %ecx
	cmpl $5, %ecx
	ja 9f
	addl $10, %ecx
2:	shlq $4, %rax
	orq %rcx, %rax
	incq %rdx
	jmp 1b
3:	movzbl (%rdx), %ecx            /* decimal */
	subl $'0', %ecx
	cmpl $9, %ecx
	ja 9f
	imulq $10, %rax
	addq %rcx, %rax
	incq %rdx
	jmp 3b
9:	ret

/* cmdline_u64(key, default): the numeric value of key=, or default. */
	.globl cmdline_u64
cmdline_u64:
	pushq %rsi
	call cmdline_find
	popq %rsi
	testq %rax, %rax
	jz 1f
	movq %rax, %rdi
	call parse_u64
	ret
1:	movq %rsi, %rax
	ret

	.section .rodata
hexdigits:	.ascii "0123456789abcdef"

	.section .note.GNU-stack, "", @progbits
