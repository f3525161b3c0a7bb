use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn varints_round_trip_and_have_the_right_length() {
    for v in [
        0u64,
        1,
        127,
        128,
        300,
        16383,
        16384,
        u32::MAX as u64,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "{v}");
        assert_eq!(read_varint(&out, 0).unwrap(), (v, out.len()));
    }
    assert_eq!(varint_len(u64::MAX), 10);
}

#[test]
fn varint_errors() {
    assert_eq!(
        read_varint(&[0x80, 0x80], 0),
        Err(ProtoError::TruncatedVarint { at: 0 })
    );
    assert_eq!(
        read_varint(&[0xff; 11], 0),
        Err(ProtoError::VarintTooLong { at: 0 })
    );
    // 10-byte varint with overflow bits: accepted, high bits dropped (as C++ does).
    let (v, end) = read_varint(
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        0,
    )
    .unwrap();
    assert_eq!((v, end), (u64::MAX, 10));
}

#[test]
fn int32_negative_is_ten_bytes() {
    let mut out = Vec::new();
    put_int32_field(&mut out, 6, -1);
    assert_eq!(out.len(), 11);
    let fields = parse_message(&out).unwrap();
    assert_eq!(fields[0].int32().unwrap(), -1);
}

#[test]
fn parses_every_wire_type() {
    // 1: varint 150; 2: fixed64; 3: len "ab"; 4: group { 1: varint 1 }; 5: fixed32
    let msg = hex("08 9601  11 0102030405060708  1a 02 6162  23 0801 24  2d 01000000");
    let fields = parse_message(&msg).unwrap();
    let kinds: Vec<_> = fields.iter().map(|f| (f.number(), f.wire_type())).collect();
    assert_eq!(
        kinds,
        vec![
            (1, WireType::Varint),
            (2, WireType::I64),
            (3, WireType::Len),
            (4, WireType::StartGroup),
            (5, WireType::I32)
        ]
    );
    assert_eq!(fields[0].varint().unwrap(), 150);
    assert_eq!(fields[1].fixed64().unwrap(), 0x0807060504030201);
    assert_eq!(fields[2].bytes().unwrap(), b"ab");
    assert_eq!(fields[3].value_bytes(), &[0x08, 0x01]);
    assert_eq!(fields[3].record(), &[0x23, 0x08, 0x01, 0x24]);
    assert_eq!(fields[4].fixed32().unwrap(), 1);
    assert_eq!(fields[2].range(), 12..16);
    let rebuilt: Vec<u8> = fields.iter().flat_map(|f| f.record().to_vec()).collect();
    assert_eq!(rebuilt, msg);
}

#[test]
fn malformed_messages_are_errors() {
    // Length beyond the body.
    assert!(matches!(
        parse_message(&hex("0a 05 6162")),
        Err(ProtoError::LengthOutOfBounds {
            at: 0,
            len: 5,
            available: 2
        })
    ));
    // Truncated varint value and truncated tag.
    assert!(matches!(
        parse_message(&hex("08 96")),
        Err(ProtoError::TruncatedVarint { at: 1 })
    ));
    assert!(matches!(
        parse_message(&hex("0801 80")),
        Err(ProtoError::TruncatedVarint { at: 2 })
    ));
    // Field number 0 and wire types 6/7.
    assert!(matches!(
        parse_message(&hex("00 01")),
        Err(ProtoError::InvalidTag { .. })
    ));
    assert!(matches!(
        parse_message(&hex("0e 01")),
        Err(ProtoError::InvalidTag { .. })
    ));
    assert!(matches!(
        parse_message(&hex("0f 01")),
        Err(ProtoError::InvalidTag { .. })
    ));
    // Truncated fixed values.
    assert!(matches!(
        parse_message(&hex("09 0102")),
        Err(ProtoError::TruncatedFixed { needed: 8, .. })
    ));
    assert!(matches!(
        parse_message(&hex("0d 01")),
        Err(ProtoError::TruncatedFixed { needed: 4, .. })
    ));
    // Groups: stray end, unterminated, mismatched end.
    assert!(matches!(
        parse_message(&hex("0c")),
        Err(ProtoError::UnexpectedEndGroup { .. })
    ));
    assert!(matches!(
        parse_message(&hex("0b 0801")),
        Err(ProtoError::UnterminatedGroup { .. })
    ));
    assert!(matches!(
        parse_message(&hex("0b 14")),
        Err(ProtoError::UnexpectedEndGroup { number: 2, .. })
    ));
    // Deeply nested groups stop at the limit instead of exhausting the stack.
    let mut deep = vec![0x0b; 200];
    deep.extend(vec![0x0c; 200]);
    assert!(matches!(
        parse_message(&deep),
        Err(ProtoError::GroupTooDeep { .. })
    ));
    // Wrong wire type for an accessor.
    let len_field = hex("0a 00");
    let fields = parse_message(&len_field).unwrap();
    assert!(matches!(
        fields[0].varint(),
        Err(ProtoError::WrongWireType {
            number: 1,
            expected: WireType::Varint,
            found: WireType::Len
        })
    ));
}

#[test]
fn editor_without_edits_is_identity() {
    let msg = hex("08 04 2a 04 0801 1001 b006 05");
    let editor = MessageEditor::new(&msg).unwrap();
    assert!(!editor.is_modified());
    assert_eq!(editor.to_vec(), msg);
    assert_eq!(editor.encoded_len(), msg.len());
}

#[test]
fn editor_replaces_in_place_and_keeps_unknown_fields() {
    // 1: 4, 99 (unknown): 5, 3: "x"
    let msg = hex("08 04 98 06 05 1a 01 78");
    let mut editor = MessageEditor::new(&msg).unwrap();
    editor.set_varint(1, 300);
    editor.set_bytes(3, b"yz");
    assert_eq!(editor.to_vec(), hex("08 ac02 98 06 05 1a 02 797a"));
}

#[test]
fn editor_inserts_in_number_order() {
    let msg = hex("08 01 18 03 98 06 05");
    let mut editor = MessageEditor::new(&msg).unwrap();
    editor.set_varint(2, 2);
    editor.set_varint(4, 4);
    editor.set_varint(100, 7);
    assert_eq!(
        editor.to_vec(),
        hex("08 01 10 02 18 03 20 04 98 06 05 a0 06 07")
    );
    // Setting the same absent field twice keeps only the last value.
    editor.set_varint(2, 9);
    assert_eq!(
        editor.to_vec(),
        hex("08 01 10 09 18 03 20 04 98 06 05 a0 06 07")
    );
}

#[test]
fn editor_collapses_duplicates_of_a_singular_field() {
    let msg = hex("08 01 10 05 08 02");
    let mut editor = MessageEditor::new(&msg).unwrap();
    editor.set_varint(1, 3);
    assert_eq!(editor.to_vec(), hex("10 05 08 03"));
    editor.remove(1);
    assert_eq!(editor.to_vec(), hex("10 05"));
}

#[test]
fn editor_edits_nested_messages() {
    // 5: { 1: 0, 2: 0, 99: 1 }
    let msg = hex("08 04 2a 07 0800 1000 9806 01");
    let mut editor = MessageEditor::new(&msg).unwrap();
    editor
        .edit_message::<ProtoError, _>(5, |sub| {
            sub.set_varint(2, 159);
            sub.set_varint(4, 2);
            Ok(())
        })
        .unwrap();
    assert_eq!(editor.to_vec(), hex("08 04 2a 0a 0800 109f01 2002 9806 01"));
    // An absent sub-message is created.
    let type_only = hex("08 04");
    let mut editor = MessageEditor::new(&type_only).unwrap();
    editor
        .edit_message::<ProtoError, _>(2, |sub| {
            sub.set_varint(1, 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(editor.to_vec(), hex("08 04 12 02 0801"));
    // A sub-message field with the wrong wire type is an error.
    let varint_2 = hex("10 04");
    let mut editor = MessageEditor::new(&varint_2).unwrap();
    assert!(editor.edit_message::<ProtoError, _>(2, |_| Ok(())).is_err());
}
