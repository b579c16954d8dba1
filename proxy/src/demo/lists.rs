//! Word lists behind the demo data: surnames and given-name characters with their
//! pinyin, real administrative-division codes with their names, streets, residential
//! compounds, mobile prefixes and bank card BINs. Kept apart so `data.rs` reads as logic.

/// Common surnames, most frequent first, with pinyin (for e-mail local parts).
pub const SURNAMES: &[(&str, &str)] = &[
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("赵", "zhao"),
    ("黄", "huang"),
    ("周", "zhou"),
    ("吴", "wu"),
    ("徐", "xu"),
    ("孙", "sun"),
    ("胡", "hu"),
    ("朱", "zhu"),
    ("高", "gao"),
    ("林", "lin"),
    ("何", "he"),
    ("郭", "guo"),
    ("马", "ma"),
    ("罗", "luo"),
    ("梁", "liang"),
    ("宋", "song"),
    ("郑", "zheng"),
    ("谢", "xie"),
    ("韩", "han"),
    ("唐", "tang"),
    ("冯", "feng"),
    ("于", "yu"),
    ("董", "dong"),
    ("萧", "xiao"),
    ("程", "cheng"),
    ("曹", "cao"),
    ("袁", "yuan"),
    ("邓", "deng"),
    ("许", "xu"),
    ("傅", "fu"),
    ("沈", "shen"),
    ("曾", "zeng"),
    ("彭", "peng"),
    ("吕", "lv"),
    ("欧阳", "ouyang"),
    ("司马", "sima"),
];

/// Characters common in given names, with pinyin.
pub const GIVEN: &[(&str, &str)] = &[
    ("伟", "wei"),
    ("芳", "fang"),
    ("娜", "na"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("艳", "yan"),
    ("杰", "jie"),
    ("娟", "juan"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("秀", "xiu"),
    ("霞", "xia"),
    ("平", "ping"),
    ("刚", "gang"),
    ("英", "ying"),
    ("华", "hua"),
    ("建", "jian"),
    ("文", "wen"),
    ("玉", "yu"),
    ("兰", "lan"),
    ("志", "zhi"),
    ("红", "hong"),
    ("晓", "xiao"),
    ("子", "zi"),
    ("宇", "yu"),
    ("浩", "hao"),
    ("欣", "xin"),
    ("怡", "yi"),
    ("梓", "zi"),
    ("涵", "han"),
    ("轩", "xuan"),
    ("雨", "yu"),
    ("思", "si"),
    ("佳", "jia"),
    ("嘉", "jia"),
    ("博", "bo"),
    ("鑫", "xin"),
    ("婷", "ting"),
    ("俊", "jun"),
    ("海", "hai"),
    ("颖", "ying"),
    ("辉", "hui"),
    ("鹏", "peng"),
    ("琳", "lin"),
    ("晨", "chen"),
    ("阳", "yang"),
    ("凯", "kai"),
    ("慧", "hui"),
    ("倩", "qian"),
];

/// A county-level division: its 6-digit code (the first digits of a resident ID issued
/// there) and its names. `city` is empty for the districts of municipalities.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub code: &'static str,
    pub province: &'static str,
    pub city: &'static str,
    pub district: &'static str,
}

const fn area(
    code: &'static str,
    province: &'static str,
    city: &'static str,
    district: &'static str,
) -> Area {
    Area {
        code,
        province,
        city,
        district,
    }
}

/// Real division codes (GB/T 2260) with their names.
pub const AREAS: &[Area] = &[
    area("110101", "北京市", "", "东城区"),
    area("110102", "北京市", "", "西城区"),
    area("110105", "北京市", "", "朝阳区"),
    area("110108", "北京市", "", "海淀区"),
    area("120101", "天津市", "", "和平区"),
    area("310101", "上海市", "", "黄浦区"),
    area("310104", "上海市", "", "徐汇区"),
    area("310105", "上海市", "", "长宁区"),
    area("310115", "上海市", "", "浦东新区"),
    area("500103", "重庆市", "", "渝中区"),
    area("440103", "广东省", "广州市", "荔湾区"),
    area("440104", "广东省", "广州市", "越秀区"),
    area("440106", "广东省", "广州市", "天河区"),
    area("440303", "广东省", "深圳市", "罗湖区"),
    area("440304", "广东省", "深圳市", "福田区"),
    area("440305", "广东省", "深圳市", "南山区"),
    area("330102", "浙江省", "杭州市", "上城区"),
    area("330106", "浙江省", "杭州市", "西湖区"),
    area("330108", "浙江省", "杭州市", "滨江区"),
    area("320102", "江苏省", "南京市", "玄武区"),
    area("320106", "江苏省", "南京市", "鼓楼区"),
    area("510104", "四川省", "成都市", "锦江区"),
    area("510105", "四川省", "成都市", "青羊区"),
    area("510107", "四川省", "成都市", "武侯区"),
    area("420102", "湖北省", "武汉市", "江岸区"),
    area("420106", "湖北省", "武汉市", "武昌区"),
    area("430102", "湖南省", "长沙市", "芙蓉区"),
    area("610113", "陕西省", "西安市", "雁塔区"),
    area("370102", "山东省", "济南市", "历下区"),
    area("370202", "山东省", "青岛市", "市南区"),
    area("350203", "福建省", "厦门市", "思明区"),
    area("210102", "辽宁省", "沈阳市", "和平区"),
    area("230103", "黑龙江省", "哈尔滨市", "南岗区"),
    area("410105", "河南省", "郑州市", "金水区"),
    area("530102", "云南省", "昆明市", "五华区"),
];

/// Street names found in most Chinese cities.
pub const STREETS: &[&str] = &[
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平路",
    "新华路",
    "文化路",
    "长江路",
    "黄河路",
    "胜利路",
    "幸福路",
    "朝阳路",
    "光明路",
    "学府路",
    "科技路",
    "滨江大道",
    "世纪大道",
    "青年路",
];

/// Residential compound names.
pub const COMPOUNDS: &[&str] = &[
    "阳光花园",
    "锦绣家园",
    "翠苑小区",
    "金色家园",
    "碧水湾",
    "绿城桂花园",
    "万科城",
    "幸福里",
    "书香门第",
    "国际公寓",
];

/// Mobile number prefixes of the three carriers.
pub const MOBILE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
    "157", "158", "159", "166", "177", "180", "181", "186", "187", "188", "189", "191", "198",
    "199",
];

/// Debit / credit card BINs of large Chinese banks, with the card length they issue.
pub const CARD_BINS: &[(&str, usize)] = &[
    ("622202", 19), // ICBC debit
    ("621226", 19), // ICBC debit
    ("621700", 19), // CCB debit
    ("623668", 19), // CCB debit
    ("622700", 19), // CCB debit
    ("622848", 19), // ABC debit
    ("622262", 19), // Bank of Communications debit
    ("622588", 16), // China Merchants Bank debit
    ("621483", 16), // China Merchants Bank debit
    ("436742", 16), // CCB credit
];

/// E-mail domains.
pub const EMAIL_DOMAINS: &[&str] = &["qq.com", "163.com", "126.com", "example.cn"];

/// Order statuses, from placed to closed.
pub const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
