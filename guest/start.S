/*
 * Common start-up code for the hv test guests: a Xen PVH entry point that
 * switches to 64-bit long mode and drops to CPL3 (IOPL=3) in user_main.
 *
 * CPL0 code is emulated (slowly) on the paravirtual KVM the guests are tested
 * on, so everything built at link time is: the page tables (identity map of the
 * first 4 GiB with 2 MiB user-accessible pages, 3-4 GiB uncacheable), the GDT
 * and the TSS. At run time CPL0 only patches the TSS base into the GDT, fills
 * the 32 IDT gates and loads the registers.
 *
 * Entry state (PVH): 32-bit protected mode, paging off, flat segments,
 * %ebx = physical address of struct hvm_start_info.
 *
 * user_main is called at CPL3 with RFLAGS = 0x3002 (IOPL=3, interrupts off)
 * and a TSS I/O permission bitmap that allows every port: the paravirtual KVM
 * (kvm_pvm) clears IOPL in the guest's RFLAGS but honours the bitmap, so port
 * I/O at CPL3 works (and exits to the VMM) there as on VT-x/SVM/TCG.
 * If it returns, its return value (%eax) is the exit status.
 */
#include "guest.h"

/* ---- PVH ELF note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY ---------- */
	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f                  /* namesz */
	.long 4f - 3f                  /* descsz: 8, like Linux (value < 4 GiB) */
	.long XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz "Xen"
2:	.balign 4
3:	.quad pvh_start32
4:	.balign 4

/* ---- 32-bit entry ------------------------------------------------------ */
	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	movl $kstack_top, %esp
	cmpl $HVM_START_MAGIC, (%ebx)
	jne bad_magic
	movl %ebx, start_info
	movl $0, start_info + 4

	movl $pml4, %eax
	movl %eax, %cr3
	movl $0x20, %eax               /* CR4 = PAE only (TSD clear: rdtsc at CPL3) */
	movl %eax, %cr4
	movl $0xc0000080, %ecx         /* EFER.LME */
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl $0x80010033, %eax         /* CR0 = PG|WP|NE|ET|MP|PE */
	movl %eax, %cr0
	lgdt gdt_ptr
	ljmp $SEL_KCODE, $start64

/* Print a message on COM1 and exit with status 2 (no 64-bit code needed). */
bad_magic:
	movl $msg_bad_magic, %esi
1:	movb (%esi), %cl
	testb %cl, %cl
	jz 3f
	movw $COM1_LSR, %dx
2:	inb %dx, %al
	testb $LSR_THRE, %al
	jz 2b
	movw $COM1_THR, %dx
	movb %cl, %al
	outb %al, %dx
	incl %esi
	jmp 1b
3:	movb $EXIT_BAD_MAGIC, %al
	outb %al, $EXIT_PORT
4:	pause
	jmp 4b

/* ---- 64-bit, CPL0 ------------------------------------------------------ */
	.code64
start64:
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	movq $kstack_top, %rsp

	/* TSS descriptor base (the TSS is below 4 GiB: the upper half stays 0). */
	leaq tss(%rip), %rax
	leaq gdt_tss(%rip), %rdi
	movw %ax, 2(%rdi)
	shrl $16, %eax
	movb %al, 4(%rdi)
	movb %ah, 7(%rdi)
	movw $SEL_TSS, %ax
	ltr %ax

	/* IDT: 32 interrupt gates, stub i at isr_stubs + 16*i. */
	leaq idt(%rip), %rdi
	leaq isr_stubs(%rip), %rax
	movl $32, %ecx
1:	movw %ax, (%rdi)               /* offset 15:0 */
	movw $SEL_KCODE, 2(%rdi)
	movw $0x8e00, 4(%rdi)          /* present, DPL0, 64-bit interrupt gate */
	movq %rax, %rdx
	shrq $16, %rdx
	movw %dx, 6(%rdi)              /* offset 31:16 */
	shrq $16, %rdx
	movl %edx, 8(%rdi)             /* offset 63:32 */
	movl $0, 12(%rdi)
	addq $16, %rdi
	addq $16, %rax
	decl %ecx
	jnz 1b
	lidt idt_ptr(%rip)

	movq start_info(%rip), %rbx
	movq HVM_START_CMDLINE(%rbx), %rax
	movq %rax, cmdline(%rip)

	/* To CPL3 with IOPL=3. */
	pushq $SEL_UDATA
	pushq $ustack_top
	pushq $USER_RFLAGS
	pushq $SEL_UCODE
	pushq $user_entry
	iretq

/* ---- exception stubs (CPL0) ------------------------------------------- */
	.balign 16
isr_stubs:
.macro ISR vec
	.org isr_stubs + 16 * \vec
	.if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	/* the CPU pushed an error code */
	.else
	pushq $0
	.endif
	pushq $\vec
	jmp isr_common
.endm
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	ISR \v
	.endr
	.org isr_stubs + 16 * 32

/* Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
 * Prints "guest: exception N at RIP=0x... err=0x... cs=0x... rflags=0x...[ cr2=0x...]". */
isr_common:
	leaq msg_exc(%rip), %rdi
	call puts
	movq (%rsp), %rdi
	call put_dec
	leaq msg_at(%rip), %rdi
	call puts
	movq 16(%rsp), %rdi
	call put_hex
	leaq msg_err(%rip), %rdi
	call puts
	movq 8(%rsp), %rdi
	call put_hex
	leaq msg_cs(%rip), %rdi
	call puts
	movq 24(%rsp), %rdi
	call put_hex
	leaq msg_rflags(%rip), %rdi
	call puts
	movq 32(%rsp), %rdi
	call put_hex
	cmpq $14, (%rsp)
	jne 1f
	leaq msg_cr2(%rip), %rdi
	call puts
	movq %cr2, %rdi
	call put_hex
1:	movl $'\n', %edi
	call putc
	movl $EXIT_EXCEPTION, %edi
	jmp guest_exit

/* ---- CPL3 -------------------------------------------------------------- */
	.text
user_entry:
	call user_main
	movl %eax, %edi
	jmp guest_exit

	.section .rodata
msg_bad_magic:	.asciz "guest: bad hvm_start_info magic\n"
msg_exc:	.asciz "guest: exception "
msg_at:		.asciz " at RIP="
msg_err:	.asciz " err="
msg_cs:		.asciz " cs="
msg_rflags:	.asciz " rflags="
msg_cr2:	.asciz " cr2="

/* ---- descriptor tables -------------------------------------------------- */
	.data
	.balign 16
gdt:
	.quad 0
	.quad 0x00af9b000000ffff       /* 0x08 kernel code, 64-bit */
	.quad 0x00cf93000000ffff       /* 0x10 kernel data */
	.quad 0x00cff3000000ffff       /* 0x18 user data, DPL3 */
	.quad 0x00affb000000ffff       /* 0x20 user code, 64-bit, DPL3 */
gdt_tss:
	.quad 0x0000890000000000 + (tss_end - tss - 1) /* 0x28 64-bit TSS (base set at run time) */
	.quad 0
gdt_end:
	.balign 8
	.word 0, 0, 0
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	.word 0, 0, 0
idt_ptr:
	.word 32 * 16 - 1
	.quad idt

	.balign 16
tss:
	.long 0
	.quad kstack_top               /* RSP0: faults at CPL3 land on the kernel stack */
	.quad 0, 0                     /* RSP1, RSP2 */
	.quad 0
	.quad 0, 0, 0, 0, 0, 0, 0      /* IST1-7 */
	.quad 0
	.word 0
	.word tss_iomap - tss          /* I/O permission bitmap offset */
tss_iomap:
	.fill 65536 / 8, 1, 0          /* all ports allowed at CPL3 */
	.byte 0xff                     /* terminator */
tss_end:

	.balign 8
	.globl start_info, cmdline
start_info:	.quad 0                /* physical address of struct hvm_start_info */
cmdline:	.quad 0                /* physical address of the command line, or 0 */

/* ---- page tables: identity map of 0-4 GiB, 2 MiB pages ------------------ */
#define PTE_P 0x01
#define PTE_RW 0x02
#define PTE_US 0x04
#define PTE_PWT 0x08
#define PTE_PCD 0x10
#define PTE_PS 0x80
	.section .data.pagetables, "aw"
	.balign 4096
pml4:
	.quad pdpt + (PTE_P | PTE_RW | PTE_US)
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + (PTE_P | PTE_RW | PTE_US)
	.quad pd + 0x1000 + (PTE_P | PTE_RW | PTE_US)
	.quad pd + 0x2000 + (PTE_P | PTE_RW | PTE_US)
	.quad pd + 0x3000 + (PTE_P | PTE_RW | PTE_US)
	.fill 508, 8, 0
pd:
	.set .Lpd_addr, 0
	.rept 2048
	.if .Lpd_addr >= 0xc0000000         /* 3-4 GiB: MMIO, uncacheable */
	.quad .Lpd_addr | (PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_PWT | PTE_PCD)
	.else
	.quad .Lpd_addr | (PTE_P | PTE_RW | PTE_US | PTE_PS)
	.endif
	.set .Lpd_addr, .Lpd_addr + 0x200000
	.endr

/* ---- stacks and IDT ------------------------------------------------------ */
	.bss
	.balign 4096
kstack:	.skip 16384
kstack_top:
ustack:	.skip 65536
ustack_top:
	.balign 16
idt:	.skip 32 * 16

	.section .note.GNU-stack, "", @progbits
