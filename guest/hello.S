/* hello.elf: checks the COM1 scratch register, prints a line, exits 0. */
#include "guest.h"

	.text
	.globl user_main
user_main:
	subq $8, %rsp
	movb $0x5a, %al
	movw $COM1_SCR, %dx
	outb %al, %dx
	inb %dx, %al
	cmpb $0x5a, %al
	jne 1f
	leaq msg_hello(%rip), %rdi
	call puts
	movl $EXIT_OK, %edi
	call guest_exit
1:	leaq msg_scratch(%rip), %rdi
	call puts
	movl $EXIT_FAIL, %edi
	call guest_exit

	.section .rodata
msg_hello:	.asciz "hello from the hv test guest\n"
msg_scratch:	.asciz "scratch register broken\n"

	.section .note.GNU-stack, "", @progbits
